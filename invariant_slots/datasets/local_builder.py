"""Base of the embedded synthetic datasets: TFDS builders that render locally."""

import dataclasses
from typing import Any

import tensorflow_datasets as tfds


class LocallyGeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder whose examples are rendered on this machine.

  The builder config has `num_train` and `num_validation`; example `index` of
  a split is `generate(split, index)`, deterministic given the config, so
  nothing is downloaded and preparing never contacts GCS.
  """

  def generate(self, split: str, index: int) -> dict[str, Any]:
    """Example `index` of `split` as a feature dict."""
    raise NotImplementedError

  def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs) -> None:
    """Generates the data locally; never tries to fetch it from GCS."""
    download_config = dataclasses.replace(
        download_config or tfds.download.DownloadConfig(), try_download_gcs=False)
    super().download_and_prepare(download_dir=download_dir, download_config=download_config,
                                 **kwargs)

  def _split_generators(self, dl_manager):
    """Train and validation splits; nothing is downloaded."""
    del dl_manager
    config = self.builder_config
    return {"train": self._generate_examples("train", config.num_train),
            "validation": self._generate_examples("validation", config.num_validation)}

  def _generate_examples(self, split: str, num_examples: int):
    """Yields (index, example) pairs, deterministic per split and index."""
    for index in range(num_examples):
      yield index, self.generate(split, index)
