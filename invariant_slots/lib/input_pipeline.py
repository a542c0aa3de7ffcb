"""tf.data input pipelines: each process reads its own shard of the data."""

import dataclasses
import math
import os
from typing import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots.datasets import multi_object
from invariant_slots.datasets import shapes
from invariant_slots.lib import preprocessing
from invariant_slots.registry import ConfigError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Datasets:
  """Per-process pipelines; batches hold `batch_size / process_count` examples."""

  train: tf.data.Dataset
  eval: tf.data.Dataset
  num_eval_examples: int


def shapes_config(data: ml_collections.ConfigDict) -> shapes.ShapesConfig:
  """The synthetic dataset's builder config; its name encodes its options."""
  options = dict(data.shapes)
  name = "_".join(f"{key}{value}" for key, value in sorted(options.items()))
  return shapes.ShapesConfig(name=name, **options)


def _load_split(data: ml_collections.ConfigDict, train: bool) -> tuple[tf.data.Dataset, int]:
  """This process's shard of the train or eval split, and the split's size."""
  if data.source == "shapes":
    config = shapes_config(data)
    split = "train" if train else "validation"
    size = config.num_train if train else config.num_validation
    return shapes.load(config, tfds.split_for_jax_process(split), data_dir=data.data_dir), size
  if data.source == "multi_object":
    dataset = multi_object.load(data.name, os.path.expanduser(data.path))
    num_eval = data.num_eval_examples
    dataset = dataset.skip(num_eval) if train else dataset.take(num_eval)
    return dataset.shard(jax.process_count(), jax.process_index()), num_eval
  raise ConfigError(f"Unknown data.source {data.source!r}; use 'shapes' or 'multi_object'.")


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return options


def local_batch_size(global_batch_size: int) -> int:
  """Examples per process; the global batch must split over all devices."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise ConfigError(f"batch_size {global_batch_size} is not divisible by the "
                      f"{devices} devices; use a multiple of {devices}.")
  return global_batch_size // jax.process_count()


def create_datasets(config: ml_collections.ConfigDict) -> Datasets:
  """Builds the shuffled, repeated train pipeline and the single-pass eval one."""
  data = config.data
  batch = local_batch_size(config.batch_size)
  train, _ = _load_split(data, train=True)
  train = train.repeat().shuffle(data.shuffle_buffer_size, seed=config.seed)
  train = train.map(preprocessing.build_ops(data.preprocess_train),
                    num_parallel_calls=tf.data.AUTOTUNE)
  train = train.batch(batch, drop_remainder=True).prefetch(2).with_options(_options())
  evaluation, num_eval = _load_split(data, train=False)
  evaluation = evaluation.map(preprocessing.build_ops(data.preprocess_eval),
                              num_parallel_calls=tf.data.AUTOTUNE)
  evaluation = evaluation.batch(batch).prefetch(2).with_options(_options())
  return Datasets(train=train, eval=evaluation, num_eval_examples=num_eval)


def padded_eval_batches(dataset: tf.data.Dataset, num_examples: int,
                        global_batch_size: int) -> Iterator[tuple[Batch, np.ndarray]]:
  """Yields `(batch, mask [local_batch])` with every batch full-sized.

  Every process yields the same number of batches (enough to cover
  `num_examples`), padding with zeros and `mask == False`, so multi-host
  evaluation stays in lockstep.
  """
  local = global_batch_size // jax.process_count()
  num_batches = math.ceil(num_examples / global_batch_size)
  iterator = dataset.as_numpy_iterator()
  template = None
  for _ in range(num_batches):
    batch = next(iterator, None)
    if batch is not None:
      template = batch
      valid = len(next(iter(batch.values())))
    else:
      if template is None:
        raise ConfigError("The evaluation split is empty.")
      batch, valid = template, 0
    mask = np.arange(local) < valid
    padded = {k: np.concatenate([v[:valid], np.zeros((local - valid,) + v.shape[1:], v.dtype)])
              for k, v in batch.items()}
    yield padded, mask
