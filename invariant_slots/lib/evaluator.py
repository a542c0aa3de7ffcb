"""The evaluation loop shared by all pipelines."""

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from invariant_slots.lib import diagnostics
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
  collapse = {}
  top_shares = []
  rng = jax.random.PRNGKey(config.seed + 1)
  for batch, mask in input_pipeline.padded_eval_batches(
      datasets.eval, datasets.num_eval_examples, config.batch_size):
    inputs = global_batch({**batch, "mask": mask}, sharding)
    outputs = eval_step(params, inputs, rng)
    keys = list(pipeline.per_example_outputs(config)) + [
        k for k in outputs if k.startswith(diagnostics.PREFIX)]
    gathered = multihost_utils.process_allgather(
        {**{k: outputs[k] for k in keys}, "mask": inputs["mask"]}, tiled=True)
    update = pipeline.batch_metrics(gathered, config)
    totals = update if totals is None else totals.merge(update)
    for name, (total, count) in diagnostics.summarize(gathered, gathered["mask"]).items():
      previous = collapse.get(name, (0.0, 0))
      collapse[name] = (previous[0] + total, previous[1] + count)
    if diagnostics.PREFIX + "top_share" in gathered:
      top_shares.append(gathered[diagnostics.PREFIX + "top_share"][gathered["mask"].astype(bool)])
    if images is None:
      images = pipeline.summary_images({k: local_part(v) for k, v in outputs.items()}, batch,
                                       config.num_eval_images)
  scalars = {f"eval/{k}": float(v) for k, v in totals.compute().items()}
  scalars.update({f"eval/collapse/{name}": total / count
                  for name, (total, count) in collapse.items() if count})
  if (top_shares and step > config.get("warmup_steps", 0)
      and diagnostics.looks_collapsed(np.concatenate(top_shares))):
    logging.warning("The slots look collapsed at step %d: one slot wins more than %d%% of the "
                    "foreground in most eval examples (eval/collapse/top_share %.2f).", step,
                    round(100 * diagnostics.COLLAPSE_SHARE),
                    scalars.get("eval/collapse/top_share", float("nan")))
  writer.write_scalars(step, scalars)
  writer.write_images(step, {f"eval/{k}": v for k, v in images.items()})
  writer.flush()
  return scalars
