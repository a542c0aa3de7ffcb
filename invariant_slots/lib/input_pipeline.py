"""tf.data input pipelines: each process reads its own shard of the data."""

import contextlib
import dataclasses
import math
import os
from typing import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from invariant_slots import datasets
from invariant_slots.datasets import multi_object
from invariant_slots.datasets.ops import build_ops
from invariant_slots.registry import ConfigError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Datasets:
  """Per-process pipelines; batches hold `batch_size / process_count` examples."""

  train: tf.data.Dataset
  eval: tf.data.Dataset
  num_eval_examples: int


def describe_data_error(data: ml_collections.ConfigDict, error: Exception) -> str:
  """One line for a failure to read `data`: which file and record, and where the data comes from."""
  reason = str(getattr(error, "message", error)).strip().splitlines()[0][:200]
  if data.source == "multi_object":
    return multi_object.describe_damage(data.name, os.path.expanduser(data.path), reason)
  where = data.get("data_dir") or "the TFDS data directory (~/tensorflow_datasets)"
  return (f"Cannot read the {data.source} data in {where} ({type(error).__name__}: {reason}); "
          "delete the prepared dataset there to generate or download it again.")


@contextlib.contextmanager
def naming_data_errors(config: ml_collections.ConfigDict) -> Iterator[None]:
  """Turns a failure to read the data in the block into a one-line `ConfigError`."""
  try:
    yield
  except tf.errors.OpError as e:
    raise ConfigError(describe_data_error(config.data, e)) from None


def _load_split(data: ml_collections.ConfigDict, train: bool, num_shards: int,
                shard: int) -> tuple[tf.data.Dataset, int]:
  """Shard `shard` of `num_shards` of the train or eval split, and the split's size."""
  return datasets.DATA_SOURCES.get(data.source)(data, train, num_shards, shard)


def _train_shards(config: ml_collections.ConfigDict) -> list[int]:
  """The training-data shards this process reads.

  The training split is cut into `data.num_shards` shards (default: one per
  process), each read, shuffled and batched on its own; a process reads the
  shards of its rank and the global batch is their concatenation in shard
  order. So the global batch depends on `num_shards` only, not on how many
  processes or devices there are.
  """
  num_shards = config.data.get("num_shards") or jax.process_count()
  if num_shards % jax.process_count() or config.batch_size % num_shards:
    raise ConfigError(
        f"data.num_shards={num_shards} must be a multiple of the {jax.process_count()} "
        f"processes and divide batch_size={config.batch_size}.")
  per_process = num_shards // jax.process_count()
  first = jax.process_index() * per_process
  return list(range(first, first + per_process))


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
  shards = _train_shards(config)
  num_shards = len(shards) * jax.process_count()
  preprocess_train = build_ops(data.preprocess_train)
  parts = []
  for shard in shards:
    part, _ = _load_split(data, train=True, num_shards=num_shards, shard=shard)
    part = part.repeat().shuffle(data.shuffle_buffer_size, seed=config.seed + shard)
    part = part.map(preprocess_train, num_parallel_calls=tf.data.AUTOTUNE)
    parts.append(part.batch(config.batch_size // num_shards, drop_remainder=True))
  train = tf.data.Dataset.zip(tuple(parts)).map(
      lambda *batches: {k: tf.concat([b[k] for b in batches], 0) for k in batches[0]})
  train = train.prefetch(2).with_options(_options())
  evaluation, num_eval = _load_split(data, train=False, num_shards=jax.process_count(),
                                     shard=jax.process_index())
  evaluation = evaluation.map(build_ops(data.preprocess_eval),
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
