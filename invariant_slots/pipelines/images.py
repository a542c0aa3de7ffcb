"""Image object discovery: autoencoding images through slots."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from invariant_slots.lib import losses
from invariant_slots.lib import metrics
from invariant_slots.modules import models
from invariant_slots.pipelines.base import PIPELINES, Pipeline

Array = jax.Array


def predicted_segmentation(masks: Array) -> Array:
  """Arg-max slot per pixel: `[..., num_slots, H, W, 1]` -> `[..., H, W]`."""
  return jnp.argmax(masks[..., 0], axis=-3)


def montage(images: np.ndarray) -> np.ndarray:
  """`[batch, num_slots, H, W, C]` -> `[batch, H, num_slots * W, C]`."""
  batch, num_slots, height, width, channels = images.shape
  return images.transpose(0, 2, 1, 3, 4).reshape(batch, height, num_slots * width, channels)


def upsample_attention(attention: np.ndarray, height: int, width: int) -> np.ndarray:
  """`[n, num_slots, h, w]` -> `[n, num_slots, H, W]`, each map scaled to max 1."""
  scale = (height // attention.shape[2], width // attention.shape[3])
  attention = np.repeat(np.repeat(attention, scale[0], axis=2), scale[1], axis=3)
  return attention / np.maximum(attention.max(axis=(2, 3), keepdims=True), 1e-8)


def slot_images(masks: np.ndarray, slot_outputs: np.ndarray, reconstruction: np.ndarray,
                image: np.ndarray, attention: np.ndarray) -> dict[str, np.ndarray]:
  """Input, reconstruction, per-slot renders on white, masks and attention.

  Args:
    masks: `[n, num_slots, H, W, 1]`.
    slot_outputs: `[n, num_slots, H, W, 3]`.
    reconstruction: `[n, H, W, 3]`.
    image: `[n, H, W, 3]`.
    attention: `[n, num_slots, h, w]` on the feature grid.
  """
  height, width = masks.shape[2:4]
  attention = upsample_attention(attention, height, width)
  return {
      "input": image,
      "reconstruction": np.clip(reconstruction, 0.0, 1.0),
      "slots": np.clip(montage(masks * slot_outputs + (1.0 - masks)), 0.0, 1.0),
      "masks": montage(np.repeat(masks, 3, axis=-1)),
      "attention": montage(np.repeat(attention[..., None], 3, axis=-1)),
  }


@PIPELINES.register("images")
class ImagePipeline(Pipeline):
  """Slot Attention style object discovery on single images."""

  per_example_outputs = ("loss", "ari", "fg_ari", "psnr", "pred_ids", "segmentations")

  def build_model(self, config: ml_collections.ConfigDict):
    return models.build_model(config)

  def example_batch(self, config: ml_collections.ConfigDict) -> dict[str, Array]:
    height, width = config.data.resolution
    return {"image": jnp.zeros((1, height, width, 3), jnp.float32)}

  def make_eval_step(self, model, config: ml_collections.ConfigDict):
    num_true = config.data.max_instances + 1
    num_slots = config.model.num_slots

    def eval_step(params, batch: dict[str, Array], rng: Array) -> dict[str, Array]:
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
          "segmentations": batch["segmentations"],
          "reconstruction": outputs["reconstruction"],
          "masks": outputs["masks"],
          "slot_outputs": outputs["slot_outputs"],
          "attention": outputs["attention"],
      }

    return eval_step

  def batch_metrics(self, gathered, config: ml_collections.ConfigDict) -> metrics.EvalMetrics:
    fg_miou = metrics.mean_iou_hungarian(
        gathered["segmentations"][..., 0].astype(np.int32), gathered["pred_ids"],
        config.data.max_instances + 1, config.model.num_slots)
    return metrics.eval_metrics_from_batch(
        loss=gathered["loss"], ari=gathered["ari"], fg_ari=gathered["fg_ari"],
        fg_miou=fg_miou, psnr=gathered["psnr"], mask=gathered["mask"])

  def summary_images(self, outputs, batch, num_images: int) -> dict[str, np.ndarray]:
    n = num_images
    return slot_images(outputs["masks"][:n], outputs["slot_outputs"][:n],
                       outputs["reconstruction"][:n], batch["image"][:n],
                       outputs["attention"][:n, -1])
