"""Evaluation: segmentation metrics over the eval split, and summary images."""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from invariant_slots.lib import losses
from invariant_slots.lib import metrics

Array = jax.Array


def predicted_segmentation(masks: Array) -> Array:
  """Arg-max slot per pixel: `[batch, num_slots, H, W, 1]` -> `[batch, H, W]`."""
  return jnp.argmax(masks[..., 0], axis=1)


# Per-example outputs of the eval step that metrics need from every process.
PER_EXAMPLE_OUTPUTS = ("loss", "ari", "fg_ari", "psnr", "pred_ids")


def make_eval_step(model, config: ml_collections.ConfigDict) -> Callable[..., dict[str, Array]]:
  """Builds `eval_step(params, batch, rng)` returning per-example metrics and outputs."""
  num_true = config.data.max_instances + 1
  num_slots = config.model.num_slots

  def eval_step(params: Any, batch: dict[str, Array], rng: Array) -> dict[str, Array]:
    outputs = model.apply({"params": params}, batch, train=False, rngs={"slots": rng})
    true_ids = batch["segmentations"][..., 0].astype(jnp.int32)
    pred_ids = predicted_segmentation(outputs["masks"])
    return {
        "loss": losses.per_example_loss(config.losses, outputs, batch),
        "ari": metrics.adjusted_rand_index(true_ids, pred_ids, num_true, num_slots),
        "fg_ari": metrics.adjusted_rand_index(true_ids, pred_ids, num_true, num_slots,
                                              ignore_background=True),
        "psnr": metrics.psnr(jnp.clip(outputs["reconstruction"], 0.0, 1.0), batch["image"]),
        "pred_ids": pred_ids,
        "reconstruction": outputs["reconstruction"],
        "masks": outputs["masks"],
        "slot_outputs": outputs["slot_outputs"],
        "attention": outputs["attention"],
    }

  return eval_step


def batch_metrics(results: dict[str, np.ndarray],
                  config: ml_collections.ConfigDict) -> metrics.EvalMetrics:
  """One batch's `EvalMetrics` update.

  Args:
    results: `PER_EXAMPLE_OUTPUTS` of the eval step plus the ground-truth
      `segmentations [batch, H, W, 1]` and `mask [batch]` (False for padding,
      which is skipped).
    config: The experiment config.
  """
  fg_miou = metrics.mean_iou_hungarian(
      results["segmentations"][..., 0].astype(np.int32), results["pred_ids"],
      config.data.max_instances + 1, config.model.num_slots)
  return metrics.eval_metrics_from_batch(
      loss=results["loss"], ari=results["ari"], fg_ari=results["fg_ari"],
      fg_miou=fg_miou, psnr=results["psnr"], mask=results["mask"])


def _montage(images: np.ndarray) -> np.ndarray:
  """`[batch, num_slots, H, W, C]` -> `[batch, H, num_slots * W, C]`."""
  batch, num_slots, height, width, channels = images.shape
  return images.transpose(0, 2, 1, 3, 4).reshape(batch, height, num_slots * width, channels)


def summary_images(step_outputs: dict[str, np.ndarray], batch: dict[str, np.ndarray],
                   num_images: int) -> dict[str, np.ndarray]:
  """Input, reconstruction, per-slot masked renders, masks and last-iteration attention."""
  n = num_images
  masks = step_outputs["masks"][:n]
  height, width = masks.shape[2:4]
  attention = step_outputs["attention"][:n, -1]  # [n, num_slots, h, w]
  scale = (height // attention.shape[2], width // attention.shape[3])
  attention = np.repeat(np.repeat(attention, scale[0], axis=2), scale[1], axis=3)
  attention = attention / np.maximum(attention.max(axis=(2, 3), keepdims=True), 1e-8)
  return {
      "input": batch["image"][:n],
      "reconstruction": np.clip(step_outputs["reconstruction"][:n], 0.0, 1.0),
      "slots": np.clip(_montage(masks * step_outputs["slot_outputs"][:n] + (1.0 - masks)), 0.0, 1.0),
      "masks": _montage(np.repeat(masks, 3, axis=-1)),
      "attention": _montage(np.repeat(attention[..., None], 3, axis=-1)),
  }
