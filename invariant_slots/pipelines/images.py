"""Image object discovery: autoencoding images through slots."""

import functools

import clu.metrics
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from invariant_slots.lib import diagnostics
from invariant_slots.lib import losses
from invariant_slots.lib import metrics
from invariant_slots.lib import visualize
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.pipelines.base import PIPELINES, Pipeline, segment_counts

Array = jax.Array


def solver_statistics(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Per-example statistics `[batch]` the corrector sows into "intermediates"
  (e.g. `solver_steps` of an adaptive ODE solver); empty for most correctors."""
  return getattr(CORRECTORS.get(config.model.corrector.name), "sown_statistics", ())


def sown_values(intermediates, names: tuple[str, ...]) -> dict[str, Array]:
  """The last value sown under each of `names`, wherever it is in the tree."""
  found = {}
  for path, value in jax.tree_util.tree_flatten_with_path(
      intermediates, is_leaf=lambda x: isinstance(x, tuple))[0]:
    name = getattr(path[-1], "key", None)
    if name in names:
      found[name] = value[-1]
  return found


@functools.cache
def image_eval_metrics(statistics: tuple[str, ...] = ()) -> type[clu.metrics.Collection]:
  """`EvalMetrics` plus thresholded-mask mIoU and the given solver statistics.

  `fg_miou_best` and `best_tau`: the best mean mIoU over the threshold grid
  and its threshold (`fg_miou` is the mIoU with every pixel assigned).
  """
  fields = dict(metrics.EvalMetrics.__annotations__)
  fields.update(fg_miou_best=metrics.ThresholdSweep, best_tau=metrics.BestThreshold)
  fields.update({name: metrics.nan_skipping_average(name) for name in statistics})
  return clu.metrics.Collection.create(**fields)


@PIPELINES.register("images")
class ImagePipeline(Pipeline):
  """Slot Attention style object discovery on single images."""

  def per_example_outputs(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    return ("loss", "ari", "fg_ari", "psnr", "pred_ids", "mask_confidence",
            "segmentations") + solver_statistics(config)

  def make_eval_step(self, model, config: ml_collections.ConfigDict):
    num_true, num_slots = segment_counts(config)
    statistics = solver_statistics(config)

    def eval_step(params, batch: dict[str, Array], rng: Array) -> dict[str, Array]:
      outputs, state = model.apply({"params": params}, batch, train=False,
                                   rngs={"slots": rng}, mutable=["intermediates"])
      true_ids = batch["segmentations"][..., 0].astype(jnp.int32)
      pred_ids = metrics.predicted_segmentation(outputs["masks"])
      sown = sown_values(state.get("intermediates", {}), statistics)
      return {
          **sown,
          "mask_confidence": jnp.max(outputs["masks"][..., 0], axis=-3),
          "loss": losses.per_example_loss(config.losses, outputs, batch),
          "ari": metrics.adjusted_rand_index(true_ids, pred_ids, num_true, num_slots),
          "fg_ari": metrics.adjusted_rand_index(true_ids, pred_ids, num_true, num_slots,
                                                ignore_background=True),
          "psnr": metrics.psnr(jnp.clip(outputs["reconstruction"], 0.0, 1.0), batch["image"]),
          "pred_ids": pred_ids,
          "segmentations": batch["segmentations"],
          "reconstruction": outputs["reconstruction"],
          "masks": outputs["masks"],
          "slot_outputs": outputs["slot_outputs"],
          "attention": outputs["attention"],
          **diagnostics.eval_outputs(outputs["slots"], outputs["attention"][:, -1], pred_ids,
                                     true_ids > 0),
      }

    return eval_step

  def batch_metrics(self, gathered, config: ml_collections.ConfigDict) -> clu.metrics.Collection:
    true_ids = gathered["segmentations"][..., 0].astype(np.int32)
    num_true, num_slots = segment_counts(config)
    fg_miou = metrics.mean_iou_hungarian(true_ids, gathered["pred_ids"], num_true, num_slots)
    thresholds = metrics.threshold_grid(*config.get("mask_thresholds", (0.0, 0.95, 0.025)))
    thresholded = metrics.thresholded_mean_iou(
        true_ids, gathered["pred_ids"], gathered["mask_confidence"], thresholds,
        num_true, num_slots)
    statistics = solver_statistics(config)
    return image_eval_metrics(statistics).single_from_model_output(
        loss=gathered["loss"], ari=gathered["ari"], fg_ari=gathered["fg_ari"],
        fg_miou=fg_miou, psnr=gathered["psnr"], mask=gathered["mask"],
        threshold_scores=thresholded, thresholds=thresholds,
        **{name: gathered[name] for name in statistics})

  def summary_images(self, outputs, batch, num_images: int) -> dict[str, np.ndarray]:
    n = num_images
    return visualize.slot_images(outputs["masks"][:n], outputs["slot_outputs"][:n],
                       outputs["reconstruction"][:n], batch["image"][:n],
                       outputs["attention"][:n, -1])
