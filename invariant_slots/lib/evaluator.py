"""The evaluation loop shared by all pipelines."""

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from invariant_slots.lib import input_pipeline
from invariant_slots.lib.protocol import EvalStep, Pipeline

Array = jax.Array


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Array]:
  """Assembles the global batch from every process's `[local_batch, ...]` part."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def local_part(array: Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array."""
  shards = sorted(array.addressable_shards, key=lambda shard: shard.index[0].start or 0)
  return np.concatenate([np.asarray(shard.data) for shard in shards])


def evaluate(params, pipeline: Pipeline, eval_step: EvalStep,
             datasets: input_pipeline.Datasets, config: ml_collections.ConfigDict,
             sharding: NamedSharding, writer, step: int) -> dict[str, float]:
  """Runs the eval split, writes scalars and images, returns the scalars.

  Every process gathers the per-example results of the whole global batch, so
  all compute the same metrics; process 0's writer records them. Images come
  from this process's part of the first batch.
  """
  totals = None
  images = None
  rng = jax.random.PRNGKey(config.seed + 1)
  for batch, mask in input_pipeline.padded_eval_batches(
      datasets.eval, datasets.num_eval_examples, config.batch_size):
    inputs = global_batch({**batch, "mask": mask}, sharding)
    outputs = eval_step(params, inputs, rng)
    gathered = multihost_utils.process_allgather(
        {**{k: outputs[k] for k in pipeline.per_example_outputs}, "mask": inputs["mask"]},
        tiled=True)
    update = pipeline.batch_metrics(gathered, config)
    totals = update if totals is None else totals.merge(update)
    if images is None:
      images = pipeline.summary_images({k: local_part(v) for k, v in outputs.items()}, batch,
                                       config.num_eval_images)
  scalars = {f"eval/{k}": float(v) for k, v in totals.compute().items()}
  writer.write_scalars(step, scalars)
  writer.write_images(step, {f"eval/{k}": v for k, v in images.items()})
  writer.flush()
  return scalars
