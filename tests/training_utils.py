"""Helpers for tests that run the trainer on a tiny synthetic dataset."""

import glob
import os
import subprocess
import sys

import ml_collections
import numpy as np
import tensorflow as tf

from invariant_slots import config_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CONFIG = os.path.join(REPO, "configs", "shapes.py")

# `configs/shapes.py` shrunk to seconds: 64 training scenes, 16 for eval.
TINY = {
    "data.shapes.num_train": 64,
    "data.shapes.num_validation": 16,
    "data.shuffle_buffer_size": 64,
    "batch_size": 8,
    "num_train_steps": 4,
    "warmup_steps": 2,
    "log_loss_every_steps": 1,
    "eval_every_steps": 1000,
    "checkpoint_every_steps": 1000,
    "num_eval_images": 2,
}


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """The tiny shapes config with `data_dir` and dotted-key overrides."""
  return config_files.load_config(
      SHAPES_CONFIG, **{**TINY, "data.data_dir": data_dir, **overrides})


def tiny_flags(data_dir: str, **overrides) -> list[str]:
  """The same as command-line flags for `invariant_slots.main`."""
  options = {**TINY, "data.data_dir": data_dir, **overrides}
  return [f"--config={SHAPES_CONFIG}"] + [f"--config.{k}={v}" for k, v in options.items()]


def run_main(flags: list[str], num_devices: int = 1, **kwargs) -> subprocess.CompletedProcess:
  """Runs `python -m invariant_slots.main` with `num_devices` forced CPU devices."""
  return subprocess.run([sys.executable, "-m", "invariant_slots.main", *flags], cwd=REPO,
                        env=child_env(num_devices), capture_output=True, text=True,
                        timeout=600, check=False, **kwargs)


def child_env(num_devices: int = 1) -> dict[str, str]:
  """The environment of a child process: this checkout's package, `num_devices` CPU devices."""
  path = os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p])
  return dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")


def read_scalars(workdir: str, tag: str) -> dict[int, float]:
  """`{step: value}` of one scalar tag from the TensorBoard event files."""
  values = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(np.asarray(tf.make_ndarray(value.tensor)))
  return values


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir` as `invariant_slots.main` does; the last eval's scalars."""
  from invariant_slots import pipelines  # pylint: disable=g-import-not-at-top
  from invariant_slots.lib import trainer  # pylint: disable=g-import-not-at-top
  return trainer.train_and_evaluate(config, workdir, pipelines.get_pipeline(config))
