"""Helpers for tests that run the trainer on a tiny synthetic dataset."""

import glob
import os

import ml_collections
import numpy as np
import tensorflow as tf

from invariant_slots.lib import config_defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """`configs/shapes.py` shrunk to seconds: 64 training scenes, 16 for eval."""
  config = config_defaults.load_config(os.path.join(REPO, "configs", "shapes.py"))
  config.data.data_dir = data_dir
  config.data.shapes.num_train = 64
  config.data.shapes.num_validation = 16
  config.data.shuffle_buffer_size = 64
  config.batch_size = 8
  config.num_train_steps = 4
  config.warmup_steps = 2
  config.log_loss_every_steps = 1
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.num_eval_images = 2
  return config_defaults.apply_overrides(config, **overrides)


def read_scalars(workdir: str, tag: str) -> dict[int, float]:
  """`{step: value}` of one scalar tag from the TensorBoard event files."""
  values = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(np.asarray(tf.make_ndarray(value.tensor)))
  return values
