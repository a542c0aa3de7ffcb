"""Video object discovery and tracking (SAVi / SAVi++) on MOVi-schema videos.

Training sees short windows; evaluation runs whole videos in slices of
`config.eval_slice_length` frames, each slice starting from the slots the
previous one predicted. Video FG-ARI and FG-mIoU treat an object across all
frames as one segment and leave out the first, conditioned frame.
"""

import colorsys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from invariant_slots.datasets import movi  # pylint: disable=unused-import  (data sources)
from invariant_slots.lib import losses
from invariant_slots.lib import metrics
from invariant_slots.lib import video_ops
from invariant_slots.modules import video
from invariant_slots.pipelines.base import PIPELINES, Pipeline
from invariant_slots.registry import ConfigError

Array = jax.Array
# Frames drawn per video in the TensorBoard images.
MAX_SUMMARY_FRAMES = 8


def predicted_segmentation(masks: Array) -> Array:
  """Arg-max slot per pixel: `[batch, T, K, H, W, 1]` -> `[batch, T, H, W]`."""
  return jnp.argmax(masks[..., 0], axis=2)


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


def color_segmentation(ids: np.ndarray, num_colors: int) -> np.ndarray:
  """Integer ids `[...]` -> RGB `[..., 3]` with evenly spaced hues (id 0 black)."""
  palette = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb(i / max(num_colors - 1, 1), 0.8, 1.0)
                                 for i in range(num_colors - 1)]
  return np.asarray(palette, np.float32)[ids]


def frame_strip(frames: np.ndarray) -> np.ndarray:
  """`[n, T, H, W, C]` -> `[n, H, T' * W, C]` of up to MAX_SUMMARY_FRAMES evenly spaced frames."""
  num_frames = frames.shape[1]
  chosen = np.linspace(0, num_frames - 1, min(num_frames, MAX_SUMMARY_FRAMES)).round()
  frames = frames[:, chosen.astype(int)]
  n, t, height, width, channels = frames.shape
  return frames.transpose(0, 2, 1, 3, 4).reshape(n, height, t * width, channels)


def as_rgb(values: np.ndarray) -> np.ndarray:
  """3 channels are clipped to [0, 1]; 1 channel is min-max scaled per video to grey."""
  if values.shape[-1] == 3:
    return np.clip(values, 0.0, 1.0)
  axes = tuple(range(1, values.ndim))
  low = values.min(axis=axes, keepdims=True)
  high = values.max(axis=axes, keepdims=True)
  return np.repeat((values - low) / np.maximum(high - low, 1e-8), 3, axis=-1)


@PIPELINES.register("video")
class VideoPipeline(Pipeline):
  """SAVi-style conditioned object discovery and tracking in videos."""

  per_example_outputs = ("loss", "ari", "fg_ari", "psnr", "pred_ids", "segmentations")

  def build_model(self, config: ml_collections.ConfigDict):
    return video.build_video_model(config)

  def example_batch(self, config: ml_collections.ConfigDict) -> dict[str, Array]:
    height, width = config.data.resolution
    max_instances = config.data.max_instances
    return {"video": jnp.zeros((1, 1, height, width, 3), jnp.float32),
            "boxes": jnp.zeros((1, 1, max_instances, 4), jnp.float32),
            "centers": jnp.zeros((1, 1, max_instances, 2), jnp.float32)}

  def make_eval_step(self, model, config: ml_collections.ConfigDict):
    num_true = config.data.max_instances + 1
    num_slots = config.model.num_slots
    # PSNR of the RGB frames when they are a target, else of the first 3-channel
    # target in [0, 1] (flow as RGB).
    targets = dict(config.model.targets)
    psnr_target = "video" if "video" in targets else next(
        (k for k, v in targets.items() if v == 3), next(iter(targets)))

    def eval_step(params, batch: dict[str, Array], rng: Array) -> dict[str, Array]:
      outputs = run_in_slices(model, params, batch, rng, config.eval_slice_length)
      true_ids = batch["segmentations"][..., 0].astype(jnp.int32)
      pred_ids = predicted_segmentation(outputs["masks"])
      ari = lambda fg: video_ari(true_ids, pred_ids, num_true, num_slots, fg)
      return {
          "loss": losses.per_example_loss(config.losses, outputs, batch),
          "ari": ari(False),
          "fg_ari": ari(True),
          "psnr": metrics.psnr(jnp.clip(outputs[psnr_target], 0.0, 1.0), batch[psnr_target]),
          "pred_ids": pred_ids,
          "segmentations": batch["segmentations"],
          **{name: outputs[name] for name in config.model.targets},
      }

    return eval_step

  def batch_metrics(self, gathered, config: ml_collections.ConfigDict) -> metrics.EvalMetrics:
    fg_miou = metrics.mean_iou_hungarian(
        gathered["segmentations"][:, 1:, ..., 0].astype(np.int32), gathered["pred_ids"][:, 1:],
        config.data.max_instances + 1, config.model.num_slots)
    return metrics.eval_metrics_from_batch(
        loss=gathered["loss"], ari=gathered["ari"], fg_ari=gathered["fg_ari"],
        fg_miou=fg_miou, psnr=gathered["psnr"], mask=gathered["mask"])

  def summary_images(self, outputs, batch, num_images: int) -> dict[str, np.ndarray]:
    n = num_images
    num_colors = int(max(outputs["pred_ids"].max(), batch["segmentations"].max())) + 1
    images = {
        "video": frame_strip(batch["video"][:n]),
        "segmentation": frame_strip(color_segmentation(outputs["pred_ids"][:n], num_colors)),
        "true_segmentation": frame_strip(
            color_segmentation(batch["segmentations"][:n, ..., 0].astype(int), num_colors)),
    }
    for name in outputs:
      if name in batch and name != "segmentations" and outputs[name].ndim == 5:
        images[f"predicted_{name}"] = frame_strip(as_rgb(outputs[name][:n]))
        images[f"target_{name}"] = frame_strip(as_rgb(batch[name][:n]))
    return images


def video_preprocessing(max_instances: int, resolution: int, train_frames: int,
                        eval_frames: int, targets: tuple[str, ...],
                        train_crop: float | None = None) -> tuple[list[str], list[str]]:
  """SAVi-style op lists `(train, eval)` for MOVi-schema data.

  Training keeps the video, boxes, centres and targets of a random window of
  `train_frames`, cropped at random to at least `train_crop` of the frame when
  given (SAVi++: 0.75), else resized; evaluation the first `eval_frames` plus
  the segmentations, resized.
  """
  common = ["video_from_tfds()", f"sparse_to_dense_annotation(max_instances={max_instances})"]
  resize = f"resize_small({resolution})"
  if train_crop is not None:
    resize_train = (f"random_resized_crop({resolution}, {resolution}, "
                    f"min_object_covered={train_crop})")
  else:
    resize_train = resize
  targets_ops = ["flow_to_rgb()", "transform_depth('log_plus')"]
  keys = ("video", "boxes", "centers") + tuple(t for t in targets if t != "video")
  train = common + [f"temporal_random_strided_window(length={train_frames})",
                    resize_train] + targets_ops
  evaluation = common + [f"temporal_crop_or_pad(length={eval_frames})", resize] + targets_ops
  return (train + [f"keep{keys!r}"], evaluation + [f"keep{keys + ('segmentations',)!r}"])


def savi_plus_plus_config(dataset: str, max_instances: int,
                          targets: dict[str, int] | None = None) -> ml_collections.ConfigDict:
  """SAVi++ on MOVi (`dataset` e.g. "movi_c"): 128x128 frames, ResNet-34 encoder
  with a Transformer head, box-conditioned slots of size 128 (objects plus
  background), one SA iteration per frame, Transformer predictor, 4-layer
  broadcast decoder for flow and depth; 6-frame training windows, 24-frame
  evaluation in slices of 6. The network and schedule are SAVi++'s
  (docs/fidelity.md). `targets` (`{name: channels}`, default flow 3 + depth 1)
  sets what the decoder predicts, each with an MSE loss."""
  from invariant_slots.lib import config_defaults  # pylint: disable=g-import-not-at-top
  config = config_defaults.training_defaults()
  config.pipeline = "video"
  config.batch_size = 64
  config.num_train_steps = 500_000
  config.learning_rate = 2e-4
  config.lr_schedule = "cosine"
  config.warmup_steps = 2500
  config.max_grad_norm = 0.05
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.num_eval_images = 4
  config.eval_slice_length = 6

  targets = targets or {"flow": 3, "depth": 1}
  data = ml_collections.ConfigDict()
  data.source = "movi"
  data.name = f"{dataset}/128x128:1.0.0"
  data.data_dir = "gs://kubric-public/tfds"
  data.resolution = (128, 128)
  data.max_instances = max_instances
  data.shuffle_buffer_size = 8 * config.batch_size
  data.num_shards = 0
  data.preprocess_train, data.preprocess_eval = video_preprocessing(
      max_instances, 128, train_frames=6, eval_frames=24, targets=tuple(targets),
      train_crop=0.75)
  config.data = data

  model = ml_collections.ConfigDict()
  model.num_slots = max_instances + 1
  model.slot_size = 128
  model.targets = targets
  # The SAVi++ network module by module (docs/fidelity.md): ResNet-34 with the
  # 3x3 stem for small inputs, the Transformer encoder head giving 64-d tokens,
  # boxes (and a zero box for the background) through an MLP, SA with qkv 256
  # and no MLP, a post-LN predictor and 1x1 readouts of the broadcast decoder.
  model.encoder = dict(name="ResNet34", width=64, stem_kernel_size=3, stem_stride=1,
                       stem_activation=False, mlp_size=64, position_embedding="linear",
                       transformer=dict(num_layers=4, num_heads=4, qkv_size=64,
                                        transformer_mlp_size=1024))
  model.initializer = dict(conditioning="boxes", hidden_size=256, background_slot=True,
                           zero_box_background=True)
  model.corrector = dict(name="SA", num_iterations=1, qkv_size=256, mlp_size=0)
  model.predictor = dict(num_heads=4, qkv_size=256, mlp_size=1024)
  model.decoder = dict(name="SpatialBroadcast", broadcast_size=(8, 8), features=(64,) * 4,
                       strides=(2,) * 4, kernel_size=5, readout="dense",
                       position_embedding="linear")
  config.model = model
  config.losses = ml_collections.ConfigDict({
      name: {"type": "mse", "prediction": name, "target": name, "weight": 1.0}
      for name in targets})
  return config
