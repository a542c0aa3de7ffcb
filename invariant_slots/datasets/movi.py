"""MOVi videos: the real Kubric datasets through TFDS, and a synthetic stand-in.

`movi_features(num_frames, height, width)` is the feature dict of Kubric's
MOVi-C builder (`challenges/movi/movi_c.py`); MOVi-A/B/D/E differ only in a
few per-instance descriptors that the video pipeline does not read. The
synthetic `MoviShapes` builder writes exactly these features, so the same
loader and preprocessing ops read both:

  video:          uint8 [T, H, W, 3]
  segmentations:  uint8 [T, H, W, 1], 0 = background, i + 1 = instances[i]
  forward_flow:   uint16 [T, H, W, 2] (delta_row, delta_col) in pixels,
                  quantised over metadata/forward_flow_range
  backward_flow:  uint16 [T, H, W, 2], over metadata/backward_flow_range
  depth:          uint16 [T, H, W, 1], over metadata/depth_range
  normal, object_coordinates: uint16 [T, H, W, 3]
  instances:      sequence of per-object dicts; `bboxes` (BBox ymin, xmin,
                  ymax, xmax in [0, 1]) for the frames listed in `bbox_frames`
                  (those where the object is visible), `visibility` [T] uint16
                  visible pixel counts, `positions` [T, 3], `image_positions`
                  [T, 2], ...
  camera, events, background, metadata (video_name, width, height,
                  num_frames, num_instances, the three ranges).

A quantised value q in [0, 65535] stands for `lo + q / 65535 * (hi - lo)`
with `(lo, hi)` the range in `metadata`.

Synthetic scenes: flat 2D shapes (the rasteriser of `shapes.py`) translate
with constant speed and bounce elastically off the image borders. Each object
has a constant depth; nearer objects occlude farther ones. With `min_gap` >= 0
objects also bounce off each other (equal masses, on their bounding boxes) and
never come within `min_gap` pixels, so none is ever occluded. Flow is exact: all
pixels of an object move by the object's displacement between frames.
Positions are `(y, x, depth)` with `(y, x)` the normalised centre;
`image_positions` are `(y, x)`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import zlib
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots.datasets import local_builder
from invariant_slots.datasets.sources import DATA_SOURCES
from invariant_slots.datasets import shapes
from invariant_slots.registry import ConfigError

UINT16_MAX = 65535
# Where the published MOVi datasets live (TFDS format, one folder per dataset).
MOVI_GCS_DIR = "gs://kubric-public/tfds"
# Kubric's MOVi-C asset categories (instances/category).
CATEGORIES: tuple[str, ...] = (
    "Action Figures", "Bag", "Board Games", "Bottles and Cans and Cups", "Camera",
    "Car Seat", "Consumer Goods", "Hat", "Headphones", "Keyboard", "Legos",
    "Media Cases", "Mouse", "None", "Shoe", "Stuffed Toys", "Toys")
BACKGROUND_DEPTH = 12.0
MIN_DEPTH, MAX_DEPTH = 4.0, 10.0
# Every object shows at least this fraction of its area in the first frame.
MIN_FIRST_FRAME_VISIBLE = 0.5
_FOCAL_LENGTH, _SENSOR_WIDTH = 35.0, 32.0


def movi_features(num_frames: int, height: int, width: int) -> tfds.features.FeaturesDict:
  """The TFDS features of a MOVi-C video of `num_frames` frames of `height x width`."""
  s, h, w = num_frames, height, width
  f32, u16 = np.float32, np.uint16
  tensor = tfds.features.Tensor
  instance = {
      "mass": f32, "friction": f32, "restitution": f32,
      "positions": tensor(shape=(s, 3), dtype=f32),
      "quaternions": tensor(shape=(s, 4), dtype=f32),
      "velocities": tensor(shape=(s, 3), dtype=f32),
      "angular_velocities": tensor(shape=(s, 3), dtype=f32),
      "bboxes_3d": tensor(shape=(s, 8, 3), dtype=f32),
      "image_positions": tensor(shape=(s, 2), dtype=f32),
      "bboxes": tfds.features.Sequence(tfds.features.BBoxFeature()),
      "bbox_frames": tfds.features.Sequence(tensor(shape=(), dtype=np.int32)),
      "visibility": tensor(shape=(s,), dtype=u16),
      "asset_id": tfds.features.Text(),
      "category": tfds.features.ClassLabel(names=CATEGORIES),
      "scale": f32,
  }
  return tfds.features.FeaturesDict({
      "metadata": {
          "video_name": tfds.features.Text(),
          "width": np.int32, "height": np.int32, "num_frames": np.int32,
          "num_instances": u16,
          "depth_range": tensor(shape=(2,), dtype=f32),
          "forward_flow_range": tensor(shape=(2,), dtype=f32),
          "backward_flow_range": tensor(shape=(2,), dtype=f32),
      },
      "background": tfds.features.Text(),
      "instances": tfds.features.Sequence(feature=instance),
      "camera": {
          "focal_length": f32, "sensor_width": f32, "field_of_view": f32,
          "positions": tensor(shape=(s, 3), dtype=f32),
          "quaternions": tensor(shape=(s, 4), dtype=f32),
      },
      "events": {
          "collisions": tfds.features.Sequence({
              "instances": tensor(shape=(2,), dtype=u16),
              "frame": np.int32, "force": f32,
              "position": tensor(shape=(3,), dtype=f32),
              "image_position": tensor(shape=(2,), dtype=f32),
              "contact_normal": tensor(shape=(3,), dtype=f32),
          }),
      },
      "video": tfds.features.Video(shape=(s, h, w, 3)),
      "segmentations": tfds.features.Sequence(
          tfds.features.Image(shape=(h, w, 1), dtype=np.uint8), length=s),
      "forward_flow": tfds.features.Sequence(tensor(shape=(h, w, 2), dtype=u16), length=s),
      "backward_flow": tfds.features.Sequence(tensor(shape=(h, w, 2), dtype=u16), length=s),
      "depth": tfds.features.Sequence(
          tfds.features.Image(shape=(h, w, 1), dtype=u16), length=s),
      "normal": tfds.features.Video(shape=(s, h, w, 3), dtype=u16),
      "object_coordinates": tfds.features.Video(shape=(s, h, w, 3), dtype=u16),
  })


def quantize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Float array -> (uint16 array, float32 [2] range), as Kubric stores flow and depth."""
  low, high = float(values.min()), float(values.max())
  if high <= low:
    high = low + 1.0
  quantized = np.round((values - low) / (high - low) * UINT16_MAX).astype(np.uint16)
  return quantized, np.array([low, high], np.float32)


def dequantize(quantized: np.ndarray, value_range: np.ndarray) -> np.ndarray:
  """Inverse of `quantize` up to rounding: float32 values."""
  low, high = float(value_range[0]), float(value_range[1])
  return (low + quantized.astype(np.float32) / UINT16_MAX * (high - low)).astype(np.float32)


@dataclasses.dataclass(eq=False)
class MoviShapesConfig(shapes.ShapesConfig):
  """Configuration of the synthetic MOVi-schema video dataset.

  The scene options are those of `shapes.ShapesConfig` (resolution, object
  counts, sizes, colours, gaps, split sizes, seed; options not given take its
  defaults), except that objects do not rotate and `max_size` stays below 0.4.
  The video adds:

  Attributes:
    num_frames: Frames per video.
    min_speed, max_speed: Speed in frame sides per frame.
  """

  num_frames: int = 24
  min_speed: float = 0.01
  max_speed: float = 0.04

  def __post_init__(self):
    super().__post_init__()
    if self.max_rotation_deg:
      raise ValueError("The synthetic videos' objects do not rotate; set max_rotation_deg=0.")
    if self.max_size >= 0.4:
      raise ValueError(f"Need max_size < 0.4 so that objects can move, got {self.max_size}.")
    if not 0.0 <= self.min_speed <= self.max_speed:
      raise ValueError("Need 0 <= min_speed <= max_speed.")


def _boxes(positions: np.ndarray, extents: np.ndarray, margin: float) -> np.ndarray:
  """Bounding boxes `[count, 4]` (y0, x0, y1, x1) of objects at `positions` `[count, 2]`.

  `extents` `[count, 4]` holds each object's (up, left, down, right) reach
  from its centre; every side is grown by `margin / 2`.
  """
  return np.concatenate([positions - extents[:, :2], positions + extents[:, 2:]], -1) + (
      np.array([-1, -1, 1, 1]) * margin / 2)


def _overlapping(boxes: np.ndarray, i: int, j: int) -> bool:
  return bool(np.all(boxes[i, :2] < boxes[j, 2:]) and np.all(boxes[j, :2] < boxes[i, 2:]))


def _trajectories(positions: np.ndarray, velocities: np.ndarray, low: np.ndarray,
                  high: np.ndarray, extents: np.ndarray, margin: float | None,
                  num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions and velocities `[count, num_frames, 2]` of objects moving at constant speed.

  Centres bounce elastically off `[low, high]` `[count, 2]` (the borders).
  With a `margin` (None: objects pass over each other), two objects whose
  boxes, grown by the margin, would overlap collide instead: they stay where
  they are for that frame and exchange their velocities along the axis on
  which they were apart (equal masses).
  """
  count = len(positions)
  out_positions = np.zeros((count, num_frames, 2))
  out_velocities = np.zeros((count, num_frames, 2))
  position, velocity = positions.astype(np.float64), velocities.astype(np.float64)
  for t in range(num_frames):
    out_positions[:, t], out_velocities[:, t] = position, velocity
    moved = position + velocity
    above, below = moved > high, moved < low
    moved = np.where(above, 2 * high - moved, np.where(below, 2 * low - moved, moved))
    velocity = np.where(above | below, -velocity, velocity)
    if margin is not None:
      before = _boxes(position, extents, margin)
      after = _boxes(moved, extents, margin)
      for i in range(count):
        for j in range(i + 1, count):
          if not _overlapping(after, i, j):
            continue
          moved[[i, j]] = position[[i, j]]
          after[[i, j]] = before[[i, j]]
          # Gaps between the boxes before the move, per axis; the larger one separated them.
          gaps = np.maximum(before[j, :2] - before[i, 2:], before[i, :2] - before[j, 2:])
          axis = int(np.argmax(gaps))
          velocity[[i, j], axis] = velocity[[j, i], axis]
    position = moved
  return out_positions, out_velocities


def _paste(canvas: np.ndarray, window: tuple[int, int, int, int], mask: np.ndarray,
           value: Any) -> None:
  r0, r1, c0, c1 = window
  canvas[r0:r1, c0:c1][mask] = value


def _sample_objects(rng: np.random.Generator, config: MoviShapesConfig) -> list[dict]:
  """Objects whose first-frame layout leaves each at least half visible.

  With `min_gap` >= 0 their first-frame boxes are also `min_gap` pixels apart.
  """
  res = config.resolution
  margin = _collision_margin(config)
  for _ in range(100):
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    depths = np.sort(rng.uniform(MIN_DEPTH, MAX_DEPTH, count))[::-1]  # Far to near.
    color_ids = rng.permutation(len(config.hues))[:count]
    objects, owner = [], np.zeros((res, res), np.int32)
    for k in range(count):
      shape_id = int(rng.integers(len(shapes.SHAPES)))
      size = float(rng.uniform(config.min_size, config.max_size))
      u_min, u_max, v_min, v_max = shapes._local_extents(shapes.SHAPES[shape_id], 0.0)  # pylint: disable=protected-access
      # Reach from the centre: up, left, down, right (image y points down).
      extents = size * np.array([v_max, -u_min, -v_min, u_max])
      low, high = extents[:2], 1.0 - extents[2:]
      position = rng.uniform(low, high)
      angle = rng.uniform(0.0, 2 * math.pi)
      speed = rng.uniform(config.min_speed, config.max_speed)
      velocity = speed * np.array([math.sin(angle), math.cos(angle)])
      window, mask = shapes.shape_mask(shape_id, position, size, 0.0, res)
      _paste(owner, window, mask, k + 1)
      objects.append(dict(shape=shape_id, size=size, low=low, high=high, extents=extents,
                          position=position, velocity=velocity, depth=float(depths[k]),
                          color_id=int(color_ids[k]), area=int(mask.sum())))
    visible = np.bincount(owner.ravel(), minlength=count + 1)[1:]
    if not all(v >= max(4, MIN_FIRST_FRAME_VISIBLE * o["area"])
               for v, o in zip(visible, objects)):
      continue
    if margin is not None:
      boxes = _boxes(np.stack([o["position"] for o in objects]),
                     np.stack([o["extents"] for o in objects]), margin)
      if any(_overlapping(boxes, i, j) for i in range(count) for j in range(i + 1, count)):
        continue
    return objects
  raise RuntimeError("Could not place the objects; lower max_objects, max_size or min_gap.")


def _too_close_in_frame(objects: list[dict], positions: np.ndarray, resolution: int,
                        gap: int) -> bool:
  """Whether two `objects` at `positions` `[count, 2]` lie within `gap` pixels."""
  seg = np.zeros((resolution, resolution), np.uint8)
  for k, obj in enumerate(objects):
    window, mask = shapes.shape_mask(obj["shape"], positions[k], obj["size"], 0.0, resolution)
    if shapes._too_close(seg, window, mask, gap):  # pylint: disable=protected-access
      return True
    _paste(seg, window, mask, k + 1)
  return False


def _collision_margin(config: MoviShapesConfig) -> float | None:
  """Box margin (frame sides) that keeps rasterised objects `min_gap` pixels apart."""
  return None if config.min_gap < 0 else (config.min_gap + 2) / config.resolution


def _motion(rng: np.random.Generator, config: MoviShapesConfig
            ) -> tuple[list[dict], np.ndarray, np.ndarray]:
  """Objects and their positions and velocities `[count, num_frames, 2]`.

  With `min_gap` >= 0, videos in which two objects come within `min_gap`
  pixels in some frame are redrawn.
  """
  margin = _collision_margin(config)
  for _ in range(100):
    objects = _sample_objects(rng, config)
    positions, velocities = _trajectories(
        np.stack([o["position"] for o in objects]), np.stack([o["velocity"] for o in objects]),
        np.stack([o["low"] for o in objects]), np.stack([o["high"] for o in objects]),
        np.stack([o["extents"] for o in objects]), margin, config.num_frames)
    if margin is None or not any(
        _too_close_in_frame(objects, positions[:, t], config.resolution, config.min_gap)
        for t in range(config.num_frames)):
      return objects, positions, velocities
  raise RuntimeError("Could not keep the objects apart; lower max_objects, max_size or min_gap.")


def render_video(rng: np.random.Generator, config: MoviShapesConfig,
                 name: str) -> dict[str, Any]:
  """One synthetic video as a dict of `movi_features` values."""
  res, num_frames = config.resolution, config.num_frames
  objects, positions, velocities = _motion(rng, config)
  count = len(objects)
  background = shapes._quantize(np.array(  # pylint: disable=protected-access
      shapes.BACKGROUND_COLORS[int(rng.integers(len(shapes.BACKGROUND_COLORS)))]))
  palette = shapes.palette_colors(hues=config.hues)
  colors = shapes._quantize(np.array([palette[o["color_id"]] for o in objects]))  # pylint: disable=protected-access
  lut = np.round(np.concatenate([background[None], colors]) * 255).astype(np.uint8)
  # Per-frame displacements in pixels (delta_row, delta_col).
  forward = np.zeros_like(positions)
  forward[:, :-1] = (positions[:, 1:] - positions[:, :-1]) * res
  backward = np.zeros_like(positions)
  backward[:, 1:] = -forward[:, :-1]

  seg = np.zeros((num_frames, res, res), np.uint8)
  local = np.zeros((num_frames, res, res, 2), np.float32)
  rows = (np.arange(res) + 0.5) / res
  for t in range(num_frames):
    for k, obj in enumerate(objects):  # Far to near: nearer objects paint over.
      window, mask = shapes.shape_mask(obj["shape"], positions[k, t], obj["size"], 0.0, res)
      _paste(seg[t], window, mask, k + 1)
      r0, r1, c0, c1 = window
      offset = np.stack(np.meshgrid(rows[r0:r1] - positions[k, t, 0],
                                    rows[c0:c1] - positions[k, t, 1], indexing="ij"), -1)
      local[t, r0:r1, c0:c1][mask] = offset[mask] / (2 * obj["size"]) + 0.5

  depth_lut = np.array([BACKGROUND_DEPTH] + [o["depth"] for o in objects], np.float32)
  depth, depth_range = quantize(depth_lut[seg][..., None])
  forward_lut = np.concatenate([np.zeros((1, num_frames, 2)), forward])  # [1 + count, T, 2]
  backward_lut = np.concatenate([np.zeros((1, num_frames, 2)), backward])
  frames = np.arange(num_frames)[:, None, None]
  forward_flow, forward_range = quantize(forward_lut[seg, frames].astype(np.float32))
  backward_flow, backward_range = quantize(backward_lut[seg, frames].astype(np.float32))
  foreground = (seg > 0)[..., None]
  normal = np.where(foreground, np.array([0.5, 0.5, 1.0]), 0.0)
  coordinates = np.concatenate([local, np.full(local.shape[:-1] + (1,), 0.5)], -1)
  coordinates = np.where(foreground, np.clip(coordinates, 0.0, 1.0), 0.0)

  instances = []
  counts = np.stack([np.bincount(f.ravel(), minlength=count + 1)[1:] for f in seg])  # [T, count]
  for k, obj in enumerate(objects):
    frames_visible = [int(t) for t in np.flatnonzero(counts[:, k])]
    boxes = []
    for t in frames_visible:
      ys, xs = np.nonzero(seg[t] == k + 1)
      boxes.append(tfds.features.BBox(ys.min() / res, xs.min() / res,
                                      (ys.max() + 1) / res, (xs.max() + 1) / res))
    centre = positions[k]
    depth_column = np.full((num_frames, 1), obj["depth"])
    corners = np.array([[dy, dx, dz] for dy in (-1, 1) for dx in (-1, 1) for dz in (-1, 1)])
    instances.append({
        "mass": 1.0, "friction": 0.0, "restitution": 1.0,
        "positions": np.concatenate([centre, depth_column], -1).astype(np.float32),
        "quaternions": np.tile([1.0, 0.0, 0.0, 0.0], (num_frames, 1)).astype(np.float32),
        "velocities": np.concatenate([velocities[k], np.zeros((num_frames, 1))],
                                     -1).astype(np.float32),
        "angular_velocities": np.zeros((num_frames, 3), np.float32),
        "bboxes_3d": (np.concatenate([centre, depth_column], -1)[:, None]
                      + obj["size"] * corners[None]).astype(np.float32),
        "image_positions": centre.astype(np.float32),
        "bboxes": boxes,
        "bbox_frames": np.array(frames_visible, np.int32),
        "visibility": counts[:, k].astype(np.uint16),
        "asset_id": shapes.SHAPES[obj["shape"]],
        "category": "None",
        "scale": obj["size"],
    })
  fov = 2 * math.atan(_SENSOR_WIDTH / (2 * _FOCAL_LENGTH))
  return {
      "metadata": {
          "video_name": name, "width": res, "height": res, "num_frames": num_frames,
          "num_instances": count, "depth_range": depth_range,
          "forward_flow_range": forward_range, "backward_flow_range": backward_range,
      },
      "background": "rgb(" + ",".join(str(int(v)) for v in lut[0]) + ")",
      "instances": instances,
      "camera": {
          "focal_length": _FOCAL_LENGTH, "sensor_width": _SENSOR_WIDTH,
          "field_of_view": fov,
          "positions": np.zeros((num_frames, 3), np.float32),
          "quaternions": np.tile([1.0, 0.0, 0.0, 0.0], (num_frames, 1)).astype(np.float32),
      },
      "events": {"collisions": []},
      "video": lut[seg],
      "segmentations": seg[..., None],
      "forward_flow": forward_flow,
      "backward_flow": backward_flow,
      "depth": depth,
      "normal": np.round(normal * UINT16_MAX).astype(np.uint16),
      "object_coordinates": np.round(coordinates * UINT16_MAX).astype(np.uint16),
  }


def generate_example(config: MoviShapesConfig, split: str, index: int) -> dict[str, Any]:
  """Video `index` of `split`, deterministic given the config's seed."""
  rng = np.random.default_rng([config.seed, zlib.crc32(split.encode("utf-8")), index])
  return render_video(rng, config, f"{split}_{index}")


class MoviShapes(local_builder.LocallyGeneratedBuilder):
  """Synthetic 2D videos in the MOVi feature schema, generated locally."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [MoviShapesConfig(name=f"{r}x{r}", resolution=r, max_objects=5, max_size=0.18,
                                      num_train=5000, num_validation=200) for r in (32, 64)]

  def features(self, config: MoviShapesConfig) -> tfds.features.FeaturesDict:
    return movi_features(config.num_frames, config.resolution, config.resolution)

  def generate(self, split: str, index: int) -> dict[str, Any]:
    return generate_example(self.builder_config, split, index)


# Features the video pipeline never reads: left encoded, saving their decoding.
UNUSED_FEATURES = ("normal", "object_coordinates")


def skip_unused() -> dict[str, Any]:
  """`as_dataset(decoders=...)` leaving `UNUSED_FEATURES` undecoded."""
  return {name: tfds.decode.SkipDecoding() for name in UNUSED_FEATURES}


def load_synthetic(config: MoviShapesConfig, split: str,
                   data_dir: str | os.PathLike[str] | None = None,
                   **as_dataset_kwargs: Any) -> tf.data.Dataset:
  """`split` of the synthetic dataset, generated on first use."""
  builder = local_builder.prepared(MoviShapes(config=config, data_dir=data_dir),
                                   "MOVi-schema videos")
  return builder.as_dataset(split=split, **as_dataset_kwargs)


def _check_reachable(data_dir: str, timeout: float = 5.0) -> None:
  """Fails fast when a `gs://` data_dir cannot be reached (no network)."""
  if not data_dir.startswith("gs://"):
    return
  try:
    socket.create_connection(("storage.googleapis.com", 443), timeout=timeout).close()
  except OSError:
    raise ConfigError(f"Cannot reach {data_dir} (no network); download MOVi to a local "
                      "data.data_dir or train on the synthetic videos of "
                      "configs/shapes_video.py.") from None


def movi_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder of `name` (e.g. "movi_c/128x128:1.0.0") in `data_dir`."""
  _check_reachable(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise FileNotFoundError(name)
  except (tfds.core.registered.DatasetNotFoundError, FileNotFoundError,
          tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as e:
    raise ConfigError(f"MOVi dataset {name} not found in {data_dir} ({type(e).__name__}); "
                      f"it is published at {MOVI_GCS_DIR} (copy it with gsutil -m cp -r "
                      f"{MOVI_GCS_DIR}/{name.split('/')[0]} DIR, or point data.data_dir there); "
                      "or train on the synthetic videos of configs/shapes_video.py.") from None
  return builder


def synthetic_config(data) -> MoviShapesConfig:
  """The synthetic builder config of `data.movi_shapes`; its name encodes the options."""
  options = dict(data.movi_shapes)
  try:
    return MoviShapesConfig(name=local_builder.config_name(options), **options)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"Bad data.movi_shapes: {e}") from None


@DATA_SOURCES.register("movi")
def load_movi(data, train: bool, num_shards: int, shard: int) -> tuple[tf.data.Dataset, int]:
  """Shard `shard` of `num_shards` of the MOVi dataset `data.name` in `data.data_dir`."""
  builder = movi_builder(data.name, data.data_dir)
  split = "train" if train else data.get("eval_split", "validation")
  size = builder.info.splits[split].num_examples
  dataset = builder.as_dataset(split=tfds.even_splits(split, n=num_shards)[shard],
                               decoders=skip_unused())
  return dataset, size


@DATA_SOURCES.register("movi_shapes")
def load_movi_shapes(data, train: bool, num_shards: int,
                     shard: int) -> tuple[tf.data.Dataset, int]:
  """Shard `shard` of `num_shards` of the synthetic videos of `data.movi_shapes`."""
  config = synthetic_config(data)
  split = "train" if train else "validation"
  size = config.num_train if train else config.num_validation
  return load_synthetic(config, tfds.even_splits(split, n=num_shards)[shard],
                        data.data_dir, decoders=skip_unused()), size
