"""The base class of the pipelines, and their registry.

A pipeline (images, video, multi-view, set prediction) is one `Pipeline`
subclass registered under the name that `config.pipeline` selects. The trainer
(`lib/trainer.py`) is the same for all and knows them through
`lib.protocol.Pipeline`: it builds the model and the example batch through the
pipeline, trains on `config.losses`, and at evaluation runs the pipeline's
eval step, all-gathers its `per_example_outputs` from every process and turns
them into the pipeline's CLU metrics and TensorBoard images.
"""

import clu.metrics
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from invariant_slots.lib import model_specs
from invariant_slots.lib import protocol
from invariant_slots.lib.protocol import EvalStep
from invariant_slots.registry import Registry

Array = jax.Array


class Pipeline(protocol.Pipeline):
  """Model, eval step, metrics and summary images of one kind of experiment."""

  def build_model(self, config: ml_collections.ConfigDict) -> nn.Module:
    """The model of `config.model`; raises `ConfigError` on bad settings."""
    return model_specs.build_model(config)

  def example_batch(self, config: ml_collections.ConfigDict) -> dict[str, Array]:
    """A one-example dummy batch with the model's input keys, for `init`."""
    return model_specs.example_batch(config)

  def make_eval_step(self, model: nn.Module, config: ml_collections.ConfigDict) -> EvalStep:
    """`eval_step(params, batch, rng) -> outputs` (jitted by the trainer)."""
    raise NotImplementedError

  def batch_metrics(self, gathered: dict[str, np.ndarray],
                    config: ml_collections.ConfigDict) -> clu.metrics.Collection:
    """One global batch's metrics from the gathered per-example outputs."""
    raise NotImplementedError

  def summary_images(self, outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray],
                     num_images: int) -> dict[str, np.ndarray]:
    """Named image batches `[n, H, W, C]` in [0, 1] for TensorBoard."""
    raise NotImplementedError


PIPELINES: Registry[Pipeline] = Registry("pipeline")


def segment_counts(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """`(true, predicted)` segment counts: instance ids plus background, and slots."""
  return config.data.max_instances + 1, config.model.num_slots


def get_pipeline(config: ml_collections.ConfigDict) -> Pipeline:
  """The pipeline named by `config.pipeline` (default "images")."""
  return PIPELINES.get(config.get("pipeline", "images"))()
