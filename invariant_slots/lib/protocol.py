"""What the trainer and evaluator need from a pipeline (`pipelines/` implements it).

The library knows pipelines only through this protocol: `main` builds the
pipeline that `config.pipeline` names and hands it to `trainer.train_and_evaluate`.
"""

from typing import Any, Callable, Protocol

import clu.metrics
import flax.linen as nn
import jax
import ml_collections
import numpy as np

Array = jax.Array
EvalStep = Callable[[Any, dict[str, Array], Array], dict[str, Array]]


class Pipeline(Protocol):
  """Model, eval step, metrics and summary images of one kind of experiment."""

  def per_example_outputs(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Keys of the eval step's outputs with one row per example that every
    process needs to compute the metrics (ground truth included); the trainer
    all-gathers them together with the padding `mask [batch]`."""

  def build_model(self, config: ml_collections.ConfigDict) -> nn.Module:
    """The model of `config.model`; raises `ConfigError` on bad settings."""

  def example_batch(self, config: ml_collections.ConfigDict) -> dict[str, Array]:
    """A one-example dummy batch with the model's input keys, for `init`."""

  def make_eval_step(self, model: nn.Module, config: ml_collections.ConfigDict) -> EvalStep:
    """`eval_step(params, batch, rng) -> outputs` (jitted by the trainer)."""

  def batch_metrics(self, gathered: dict[str, np.ndarray],
                    config: ml_collections.ConfigDict) -> clu.metrics.Collection:
    """One global batch's metrics from the gathered per-example outputs."""

  def summary_images(self, outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray],
                     num_images: int) -> dict[str, np.ndarray]:
    """Named image batches `[n, H, W, C]` in [0, 1] for TensorBoard."""
