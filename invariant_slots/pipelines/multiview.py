"""Novel view synthesis through slots (OSRT) on posed multi-view scenes.

Training renders random rays of held-out views from slots inferred from the
input views. Evaluation renders every pixel of the held-out views and reports
their PSNR and the FG-ARI of the per-ray slot assignment over all held-out
views at once (one object seen in several views is one cluster).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from invariant_slots.lib import diagnostics
from invariant_slots.lib import losses
from invariant_slots.lib import metrics
from invariant_slots.lib import visualize
from invariant_slots.pipelines.base import PIPELINES, Pipeline, segment_counts

Array = jax.Array

@PIPELINES.register("multiview")
class MultiviewPipeline(Pipeline):
  """OSRT: encode posed input views into slots, render held-out views."""

  def per_example_outputs(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    del config
    return ("loss", "ari", "fg_ari", "psnr", "pred_ids", "target_ids")

  def make_eval_step(self, model, config: ml_collections.ConfigDict):
    num_true, num_slots = segment_counts(config)

    def eval_step(params, batch: dict[str, Array], rng: Array) -> dict[str, Array]:
      outputs = model.apply({"params": params}, batch, train=False, rngs={"slots": rng})
      true_ids = jnp.minimum(batch["target_ids"], num_true - 1)
      pred_ids = jnp.argmax(outputs["masks"], axis=-1)
      reconstruction = jnp.clip(outputs["reconstruction"], 0.0, 1.0)
      return {
          "loss": losses.per_example_loss(config.losses, outputs, batch),
          "ari": metrics.adjusted_rand_index(true_ids, pred_ids, num_true, num_slots),
          "fg_ari": metrics.adjusted_rand_index(true_ids, pred_ids, num_true, num_slots,
                                                ignore_background=True),
          "psnr": metrics.psnr(reconstruction, batch["target_color"]),
          "pred_ids": pred_ids,
          "target_ids": true_ids,
          "reconstruction": reconstruction,
          "masks": outputs["masks"],
          **diagnostics.eval_outputs(outputs["slots"], outputs["attention"][:, -1], pred_ids,
                                     true_ids > 0),
      }

    return eval_step

  def batch_metrics(self, gathered, config: ml_collections.ConfigDict) -> metrics.EvalMetrics:
    fg_miou = metrics.mean_iou_hungarian(
        gathered["target_ids"], gathered["pred_ids"], config.data.max_instances + 1,
        config.model.num_slots)
    return metrics.eval_metrics_from_batch(
        loss=gathered["loss"], ari=gathered["ari"], fg_ari=gathered["fg_ari"],
        fg_miou=fg_miou, psnr=gathered["psnr"], mask=gathered["mask"])

  def summary_images(self, outputs, batch, num_images: int) -> dict[str, np.ndarray]:
    n = num_images
    inputs = batch["input_image"][:n]
    height, width = inputs.shape[2:4]
    rendered = visualize.view_strip(outputs["reconstruction"][:n], height, width)
    return {
        "inputs": inputs.transpose(0, 2, 1, 3, 4).reshape(inputs.shape[0], height, -1, 3),
        "targets": visualize.view_strip(batch["target_color"][:n], height, width),
        "rendered": rendered,
        "masks": visualize.mask_overlay(rendered, visualize.view_strip(outputs["masks"][:n], height, width), 1.0),
    }
