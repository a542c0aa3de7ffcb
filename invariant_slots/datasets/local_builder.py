"""Base of the embedded synthetic datasets: TFDS builders that render locally."""

import dataclasses
from typing import Any, Mapping

import tensorflow_datasets as tfds
from absl import logging


class LocallyGeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder whose examples are rendered on this machine.

  The builder config has `num_train` and `num_validation`; example `index` of
  a split is `generate(split, index)`, deterministic given the config, so
  nothing is downloaded and preparing never contacts GCS. Subclasses name
  their `features` and `generate` the examples; the first line of their
  docstring describes the dataset.
  """

  DEFAULT_CONFIG_NAME = "64x64"

  def features(self, config: tfds.core.BuilderConfig) -> tfds.features.FeaturesDict:
    """The feature dict of `config`'s examples."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(description=self.__doc__.strip().split("\n")[0],
                                          features=self.features(self.builder_config))

  def generate(self, split: str, index: int) -> dict[str, Any]:
    """Example `index` of `split` as a feature dict."""
    raise NotImplementedError

  def download_and_prepare(self, *, download_dir=None, download_config=None, **kwargs) -> None:
    """Generates the data locally; never tries to fetch it from GCS.

    TFDS writes into a temporary folder and renames it into place. When two
    processes generate the same data at once, the second rename fails; that
    process then uses the first one's result, which is identical.
    """
    download_config = dataclasses.replace(
        download_config or tfds.download.DownloadConfig(), try_download_gcs=False)
    try:
      super().download_and_prepare(download_dir=download_dir, download_config=download_config,
                                   **kwargs)
    except OSError:
      if not self.is_prepared():
        raise
      logging.info("Another process generated %s first; using its data.", self.data_dir)
      self.info.read_from_directory(self.data_dir)

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


def config_name(options: Mapping[str, Any]) -> str:
  """A builder-config name that encodes every option, so each variant has its own folder."""
  return "_".join(f"{key}{value}" for key, value in sorted(options.items()))


def prepared(builder: LocallyGeneratedBuilder, what: str) -> LocallyGeneratedBuilder:
  """`builder`, after generating its data on first use (announcing `what` it generates)."""
  if not builder.is_prepared():
    config = builder.builder_config
    total = config.num_train + config.num_validation
    print(f"Generating the synthetic {what} ({total} examples) in {builder.data_dir} ...",
          flush=True)
    builder.download_and_prepare()
  return builder
