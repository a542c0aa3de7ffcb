"""Video object discovery and tracking (SAVi / SAVi++) on MOVi-schema videos.

Training sees short windows; evaluation runs whole videos in slices of
`config.eval_slice_length` frames, each slice starting from the slots the
previous one predicted. Video FG-ARI and FG-mIoU treat an object across all
frames as one segment and leave out the first, conditioned frame (the SAVi
paper's protocol); `fg_ari_all_frames` scores every frame (the protocol of the
SAVi README's published table).
"""

import clu.metrics
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from invariant_slots.lib import diagnostics
from invariant_slots.lib import losses
from invariant_slots.lib import metrics
from invariant_slots.lib import visualize
from invariant_slots.datasets import video_ops
from invariant_slots.pipelines.base import PIPELINES, Pipeline, segment_counts
from invariant_slots.registry import ConfigError

Array = jax.Array


def video_ari(true_ids: Array, pred_ids: Array, num_true: int, num_pred: int,
              ignore_background: bool) -> Array:
  """(FG-)ARI of whole videos `[batch, T, H, W]` without the first, conditioned frame:
  an object (or slot) across all frames is one segment. `[batch]`."""
  return metrics.adjusted_rand_index(true_ids[:, 1:], pred_ids[:, 1:], num_true, num_pred,
                                     ignore_background=ignore_background)


def run_in_slices(model, params, batch: dict[str, Array], rng: Array,
                  slice_length: int) -> dict[str, Array]:
  """Runs the model over all frames in slices that carry the slots forward.

  The slices go through one `lax.scan`, so the model is compiled once.
  Returns the model outputs with the slices joined along time (without
  `next_slots`).
  """
  num_frames = batch["video"].shape[1]
  if num_frames % slice_length:
    raise ConfigError(f"eval_slice_length={slice_length} does not divide the "
                      f"{num_frames} evaluation frames.")
  num_slices = num_frames // slice_length
  rngs = {"slots": rng}
  slots = model.apply({"params": params}, batch, method=model.initial_slots, rngs=rngs)

  def split(x: Array) -> Array:  # [B, T, ...] -> [slices, B, slice_length, ...]
    x = x.reshape((x.shape[0], num_slices, slice_length) + x.shape[2:])
    return jnp.swapaxes(x, 0, 1)

  def join(x: Array) -> Array:  # [slices, B, slice_length, ...] -> [B, T, ...]
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape((x.shape[0], num_frames) + x.shape[3:])

  def run_slice(slots: Array, part: dict[str, Array]):
    outputs = model.apply({"params": params}, part, train=False, slots=slots, rngs=rngs)
    return outputs.pop("next_slots"), outputs

  parts = {k: split(v) for k, v in batch.items() if k in video_ops.FRAME_KEYS}
  _, outputs = jax.lax.scan(run_slice, slots, parts)
  return {k: join(v) for k, v in outputs.items()}


# `EvalMetrics` (FG-ARI without the first frame, the SAVi paper's protocol) plus
# FG-ARI over all frames (the protocol of the SAVi README's table).
VIDEO_EVAL_METRICS = clu.metrics.Collection.create(
    **metrics.EvalMetrics.__annotations__,
    fg_ari_all_frames=clu.metrics.Average.from_output("fg_ari_all_frames"))


@PIPELINES.register("video")
class VideoPipeline(Pipeline):
  """SAVi-style conditioned object discovery and tracking in videos."""

  def per_example_outputs(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    del config
    return ("loss", "ari", "fg_ari", "fg_ari_all_frames", "psnr", "pred_ids", "segmentations")

  def make_eval_step(self, model, config: ml_collections.ConfigDict):
    num_true, num_slots = segment_counts(config)
    # PSNR of the RGB frames when they are a target, else of the first 3-channel
    # target in [0, 1] (flow as RGB).
    targets = dict(config.model.targets)
    psnr_target = "video" if "video" in targets else next(
        (k for k, v in targets.items() if v == 3), next(iter(targets)))

    def eval_step(params, batch: dict[str, Array], rng: Array) -> dict[str, Array]:
      outputs = run_in_slices(model, params, batch, rng, config.eval_slice_length)
      true_ids = batch["segmentations"][..., 0].astype(jnp.int32)
      pred_ids = metrics.predicted_segmentation(outputs["masks"])
      ari = lambda fg: video_ari(true_ids, pred_ids, num_true, num_slots, fg)
      return {
          "loss": losses.per_example_loss(config.losses, outputs, batch),
          "ari": ari(False),
          "fg_ari": ari(True),
          # The SAVi README's protocol: every frame scored, the conditioned first one too.
          "fg_ari_all_frames": metrics.adjusted_rand_index(
              true_ids, pred_ids, num_true, num_slots, ignore_background=True),
          "psnr": metrics.psnr(jnp.clip(outputs[psnr_target], 0.0, 1.0), batch[psnr_target]),
          "pred_ids": pred_ids,
          "segmentations": batch["segmentations"],
          **{name: outputs[name] for name in config.model.targets},
          # Diagnostics of the last frame's slots and of every frame's attention.
          **diagnostics.eval_outputs(outputs["slots"][:, -1],
                                     jnp.moveaxis(outputs["attention"][:, :, -1], 1, 2),
                                     pred_ids, true_ids > 0),
      }

    return eval_step

  def batch_metrics(self, gathered, config: ml_collections.ConfigDict):
    fg_miou = metrics.mean_iou_hungarian(
        gathered["segmentations"][:, 1:, ..., 0].astype(np.int32), gathered["pred_ids"][:, 1:],
        config.data.max_instances + 1, config.model.num_slots)
    return VIDEO_EVAL_METRICS.single_from_model_output(
        loss=gathered["loss"], ari=gathered["ari"], fg_ari=gathered["fg_ari"],
        fg_ari_all_frames=gathered["fg_ari_all_frames"], fg_miou=fg_miou,
        psnr=gathered["psnr"], mask=np.asarray(gathered["mask"], bool))

  def summary_images(self, outputs, batch, num_images: int) -> dict[str, np.ndarray]:
    n = num_images
    num_colors = int(max(outputs["pred_ids"].max(), batch["segmentations"].max())) + 1
    images = {
        "video": visualize.frame_strip(batch["video"][:n]),
        "segmentation": visualize.frame_strip(visualize.id_colors(outputs["pred_ids"][:n], num_colors)),
        "true_segmentation": visualize.frame_strip(
            visualize.id_colors(batch["segmentations"][:n, ..., 0].astype(int), num_colors)),
    }
    for name in outputs:
      if name in batch and name != "segmentations" and outputs[name].ndim == 5:
        images[f"predicted_{name}"] = visualize.frame_strip(visualize.as_rgb(outputs[name][:n]))
        images[f"target_{name}"] = visualize.frame_strip(visualize.as_rgb(batch[name][:n]))
    return images
