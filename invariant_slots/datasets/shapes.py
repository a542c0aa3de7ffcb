"""Synthetic 2D multi-object "shapes" dataset, generated locally as a TFDS builder.

Every scene is a square image showing between `min_objects` and `max_objects`
flat-coloured 2D shapes on a uniform background. Objects are painted in order
(later objects occlude earlier ones) with hard edges, so the instance
segmentation is exact. Generation is pure numpy, needs no network access and
is deterministic given the config's seed, the split name and the example index.

Typical use:

  from invariant_slots.datasets import shapes

  ds = shapes.load("64x64", split="train", data_dir="/tmp/tfds")

or, with the TFDS builder API:

  builder = shapes.Shapes(config="64x64", data_dir="/tmp/tfds")
  builder.download_and_prepare()
  ds = builder.as_dataset(split="train")

Features of one example (H = W = config.resolution, N = num_objects,
M = config.max_objects):

  image:            uint8 [H, W, 3]
  segmentations:    uint8 [H, W, 1], 0 = background, 1..N = objects in
                    painting order (stored as a zlib-encoded Tensor).
  visibility:       float32 [M], visibility[i] = 1.0 iff instance id i + 1 is
                    present (and therefore visible) in the image.
  num_objects:      int32 [], N.
  background_color: float32 [3], RGB in [0, 1].
  objects:          sequence of length N (index i <-> instance id i + 1) of
    shape:    int64 class label, index into `SHAPES`.
    color:    float32 [3], RGB in [0, 1]; the image pixels of the object are
              exactly round(255 * color).
    position: float32 [2], (y, x) centre of the shape in [0, 1] image
              coordinates (y down).
    size:     float32 [], half-extent of the unrotated shape relative to the
              image side (radius of a circle, half side of a square).
    rotation: float32 [], counter-clockwise rotation in radians (0 unless
              `max_rotation_deg` > 0; always 0 for circles).
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import os
import zlib
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots.datasets import local_builder
from invariant_slots.datasets.sources import DATA_SOURCES

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "ellipse",
    "cross",
)

# Minimum visible area of every object, as a fraction of its unoccluded area
# and as an absolute number of pixels.
MIN_VISIBLE_FRACTION = 0.25
MIN_VISIBLE_PIXELS = 8
# Placement attempts per object before the scene stops adding objects.
MAX_PLACEMENT_ATTEMPTS = 20
# Scene resamples if fewer than `min_objects` objects could be placed.
_MAX_SCENE_ATTEMPTS = 100

# Object palette: saturated hues (degrees), at least 25 degrees apart.
PALETTE_HUES: tuple[float, ...] = (
    0.0, 30.0, 58.0, 95.0, 130.0, 175.0, 205.0, 240.0, 275.0, 310.0)
_PALETTE_VALUE = 0.95
_PALETTE_VALUE_JITTER = 0.05

# Background palette: muted greys with a slight tint, far from every object
# colour (all are at least ~0.6 apart in RGB Euclidean distance).
BACKGROUND_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.12, 0.12, 0.14),
    (0.18, 0.16, 0.14),
    (0.14, 0.17, 0.15),
    (0.24, 0.24, 0.24),
    (0.30, 0.28, 0.32),
    (0.50, 0.50, 0.50),
    (0.56, 0.54, 0.52),
    (0.48, 0.50, 0.53),
)

# Shape geometry in local coordinates (u right, v up) in units of `size`:
# every unrotated shape spans exactly [-1, 1] along its longest axis.
_DIAMOND_HALF_WIDTH = 0.65
_ELLIPSE_MINOR = 0.55
_CROSS_HALF_WIDTH = 0.35
# Convex polygons (counter-clockwise vertices); a shape is their union.
_POLYGONS: dict[str, tuple[np.ndarray, ...]] = {
    "square": (np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64),),
    "triangle": (np.array([[-1, -1], [1, -1], [0, 1]], np.float64),),
    "diamond": (np.array([[0, -1], [_DIAMOND_HALF_WIDTH, 0], [0, 1],
                          [-_DIAMOND_HALF_WIDTH, 0]], np.float64),),
    "cross": (
        np.array([[-1, -_CROSS_HALF_WIDTH], [1, -_CROSS_HALF_WIDTH],
                  [1, _CROSS_HALF_WIDTH], [-1, _CROSS_HALF_WIDTH]], np.float64),
        np.array([[-_CROSS_HALF_WIDTH, -1], [_CROSS_HALF_WIDTH, -1],
                  [_CROSS_HALF_WIDTH, 1], [-_CROSS_HALF_WIDTH, 1]], np.float64),
    ),
}


def _quantize(color: np.ndarray) -> np.ndarray:
  """Rounds RGB values in [0, 1] to the uint8 grid; float32 [..., 3]."""
  return (np.round(np.clip(color, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def palette_colors(value: float = _PALETTE_VALUE,
                   hues: Sequence[float] = PALETTE_HUES) -> np.ndarray:
  """Saturated colours of `hues` (degrees) at HSV value `value`; float32 [len(hues), 3]."""
  return np.array([colorsys.hsv_to_rgb(h / 360.0, 1.0, value)
                   for h in hues], np.float32)


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """Configuration of the synthetic shapes dataset.

  Attributes:
    resolution: Image height and width in pixels.
    min_objects: Minimum number of objects per scene (>= 1).
    max_objects: Maximum number of objects per scene (<= len(PALETTE_HUES)).
    num_train: Number of training examples.
    num_validation: Number of validation examples.
    seed: Base seed; each split/example derives its own generator from it.
    min_size: Minimum object half-extent relative to the image side.
    max_size: Maximum object half-extent relative to the image side.
    max_rotation_deg: Objects (except circles) are rotated uniformly in
      [-max_rotation_deg, max_rotation_deg]; 0 disables rotation.
    num_colors: 0 uses the whole `PALETTE_HUES` palette; n >= 2 uses n hues
      evenly spaced around the colour wheel (starting at red), so that with
      few colours every two objects differ clearly in hue.
    min_gap: -1 lets objects occlude each other; n >= 0 keeps them apart,
      with at least n background pixels between any two objects (in the
      max-norm, so n = 0 allows touching but not overlapping).

  Note: prepared data is cached under data_dir/shapes/<name>/<version>, so
  custom configs with different parameters need different names.
  """

  resolution: int = 64
  min_objects: int = 2
  max_objects: int = 6
  num_train: int = 20000
  num_validation: int = 500
  seed: int = 0
  min_size: float = 0.10
  max_size: float = 0.20
  max_rotation_deg: float = 0.0
  num_colors: int = 0
  min_gap: int = -1

  def __post_init__(self):
    if self.resolution < 8:
      raise ValueError(f"resolution must be >= 8, got {self.resolution}.")
    if not 1 <= self.min_objects <= self.max_objects:
      raise ValueError("Need 1 <= min_objects <= max_objects, got "
                       f"{self.min_objects}, {self.max_objects}.")
    if self.num_colors == 1 or self.num_colors < 0:
      raise ValueError(f"num_colors must be 0 (full palette) or >= 2, got "
                       f"{self.num_colors}.")
    if self.max_objects > len(self.hues):
      raise ValueError(f"max_objects must be <= {len(self.hues)} (palette "
                       f"size) so colours are distinct, got {self.max_objects}.")
    max_extent = math.sqrt(2.0) if self.max_rotation_deg else 1.0
    if not 0.0 < self.min_size <= self.max_size <= 0.5 / max_extent:
      raise ValueError("Need 0 < min_size <= max_size <= "
                       f"{0.5 / max_extent:.3f}, got {self.min_size}, "
                       f"{self.max_size}.")
    if self.min_gap < -1:
      raise ValueError(f"min_gap must be -1 (occlusion) or >= 0, got "
                       f"{self.min_gap}.")
    if self.num_train < 0 or self.num_validation < 0:
      raise ValueError("num_train and num_validation must be >= 0.")

  @property
  def hues(self) -> tuple[float, ...]:
    """Object hues of this config, in degrees."""
    return _hues(self.num_colors)


def _hues(num_colors: int) -> tuple[float, ...]:
  """Object hues in degrees: the default palette or `num_colors` evenly spaced."""
  if num_colors == 0:
    return PALETTE_HUES
  return tuple(360.0 * i / num_colors for i in range(num_colors))


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
  """Rotates (u, v) points counter-clockwise by `angle`; float [..., 2]."""
  c, s = math.cos(angle), math.sin(angle)
  return points @ np.array([[c, s], [-s, c]])


def _polygon_halfplanes(shape: str) -> np.ndarray:
  """Edge half-planes a*u + b*v + c >= 0 of a shape; float64 [P, E, 3]."""
  planes = []
  for poly in _POLYGONS[shape]:
    p0, p1 = poly, np.roll(poly, -1, axis=0)
    a = -(p1[:, 1] - p0[:, 1])
    b = p1[:, 0] - p0[:, 0]
    c = -(a * p0[:, 0] + b * p0[:, 1])
    planes.append(np.stack([a, b, c], axis=-1))
  return np.stack(planes)


_HALFPLANES: dict[str, np.ndarray] = {
    name: _polygon_halfplanes(name) for name in _POLYGONS}


def _local_extents(shape: str, rotation: float) -> tuple[float, float, float,
                                                         float]:
  """Bounding box (u_min, u_max, v_min, v_max) of a rotated unit-size shape."""
  if shape == "circle":
    return -1.0, 1.0, -1.0, 1.0
  if shape == "ellipse":
    c, s = math.cos(rotation), math.sin(rotation)
    eu = math.hypot(c, _ELLIPSE_MINOR * s)
    ev = math.hypot(s, _ELLIPSE_MINOR * c)
    return -eu, eu, -ev, ev
  points = np.concatenate(_POLYGONS[shape])
  if rotation:
    points = _rotate(points, rotation)
  lo, hi = points.min(axis=0), points.max(axis=0)
  return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, size: float,
            rotation: float) -> np.ndarray:
  """Shape membership of offsets from the centre (x right, y up).

  Args:
    shape: Name in `SHAPES`.
    dx: Horizontal offsets from the centre, float [1, w] (or broadcastable).
    dy: Upward offsets from the centre, float [h, 1] (or broadcastable).
    size: Half-extent, in the units of dx and dy.
    rotation: Counter-clockwise rotation of the shape in radians.

  Returns:
    bool [h, w].
  """
  if shape == "circle":
    return dx * dx + dy * dy <= size * size
  c, s = math.cos(rotation), math.sin(rotation)
  if shape == "ellipse":
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return u * u + (v / _ELLIPSE_MINOR) ** 2 <= size * size
  planes = _HALFPLANES[shape]  # [P, E, 3] in local (u, v).
  # Substitute u = c dx + s dy, v = -s dx + c dy and scale by size.
  a = planes[..., 0] * c - planes[..., 1] * s
  b = planes[..., 0] * s + planes[..., 1] * c
  k = planes[..., 2] * size
  values = (a[..., None, None] * dx + b[..., None, None] * dy
            + k[..., None, None])  # [P, E, h, w]
  return (values.min(axis=1) >= 0.0).any(axis=0)


def shape_mask(shape: str | int, position: Sequence[float], size: float,
               rotation: float, resolution: int
               ) -> tuple[tuple[int, int, int, int], np.ndarray]:
  """Rasterises one shape (hard edges, sampled at pixel centres).

  Args:
    shape: Name or index into `SHAPES`.
    position: (y, x) centre in [0, 1] image coordinates.
    size: Half-extent relative to the image side.
    rotation: Counter-clockwise rotation in radians.
    resolution: Image side in pixels.

  Returns:
    ((r0, r1, c0, c1), mask): a bool mask [r1 - r0, c1 - c0] covering the
    image window rows r0:r1, columns c0:c1 (the shape's bounding box).
  """
  if not isinstance(shape, str):
    shape = SHAPES[int(shape)]
  cy, cx = float(position[0]), float(position[1])
  u_min, u_max, v_min, v_max = _local_extents(shape, rotation)
  # Image y points down, local v points up.
  r0 = max(0, int(math.floor((cy - v_max * size) * resolution)))
  r1 = min(resolution, int(math.ceil((cy - v_min * size) * resolution)) + 1)
  c0 = max(0, int(math.floor((cx + u_min * size) * resolution)))
  c1 = min(resolution, int(math.ceil((cx + u_max * size) * resolution)) + 1)
  # Open coordinate grid of pixel centres inside the window, in pixels.
  centre_y, centre_x = cy * resolution - 0.5, cx * resolution - 0.5
  dy = (centre_y - np.arange(r0, r1, dtype=np.float64))[:, None]  # Up.
  dx = (np.arange(c0, c1, dtype=np.float64) - centre_x)[None, :]
  return (r0, r1, c0, c1), _inside(shape, dx, dy, size * resolution, rotation)


def _too_close(seg: np.ndarray, window: tuple[int, int, int, int],
               mask: np.ndarray, gap: int) -> bool:
  """Whether `mask` (at `window` of `seg`) lies within `gap` px of an object."""
  r0, r1, c0, c1 = window
  res = seg.shape[0]
  grown = np.zeros((r1 - r0 + 2 * gap, c1 - c0 + 2 * gap), bool)
  for dr in range(2 * gap + 1):
    for dc in range(2 * gap + 1):
      grown[dr:dr + r1 - r0, dc:dc + c1 - c0] |= mask
  # Clip the grown window to the image.
  top, left = r0 - gap, c0 - gap
  rows = slice(max(0, -top), grown.shape[0] - max(0, r1 + gap - res))
  cols = slice(max(0, -left), grown.shape[1] - max(0, c1 + gap - res))
  region = seg[max(0, top):min(res, r1 + gap), max(0, left):min(res, c1 + gap)]
  return bool(np.any(region[grown[rows, cols]]))


def _sample_placement(rng: np.random.Generator, config: ShapesConfig
                      ) -> tuple[int, float, float, np.ndarray]:
  """Samples (shape index, size, rotation, position [2]) of one object."""
  shape_idx = int(rng.integers(len(SHAPES)))
  size = float(rng.uniform(config.min_size, config.max_size))
  rotation = 0.0
  if config.max_rotation_deg and SHAPES[shape_idx] != "circle":
    rotation = float(np.deg2rad(rng.uniform(-config.max_rotation_deg,
                                            config.max_rotation_deg)))
  u_min, u_max, v_min, v_max = _local_extents(SHAPES[shape_idx], rotation)
  cy = rng.uniform(v_max * size, 1.0 + v_min * size)
  cx = rng.uniform(-u_min * size, 1.0 - u_max * size)
  return shape_idx, size, rotation, np.array([cy, cx], np.float32)


def render_scene(rng: np.random.Generator,
                 config: ShapesConfig) -> dict[str, Any]:
  """Renders one random scene.

  Objects are sampled and painted one after another. A placement is rejected
  (and resampled, up to `MAX_PLACEMENT_ATTEMPTS` times, after which the scene
  stops adding objects) if the new object covers fewer than
  `MIN_VISIBLE_PIXELS` pixels, or if it would leave any earlier object with
  fewer than max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * full area)
  visible pixels, or (with `min_gap` >= 0) if it comes within `min_gap`
  pixels of an earlier object. Scenes with fewer than `min_objects` objects
  are redrawn.

  Args:
    rng: Numpy random generator (the only source of randomness).
    config: Dataset configuration.

  Returns:
    A dict matching the `Shapes` feature dict (see the module docstring):
    image uint8 [H, W, 3], segmentations uint8 [H, W, 1], visibility float32
    [max_objects], num_objects int32 [], background_color float32 [3] and
    objects = {shape int32 [N], color float32 [N, 3], position float32 [N, 2],
    size float32 [N], rotation float32 [N]}.
  """
  res = config.resolution
  for _ in range(_MAX_SCENE_ATTEMPTS):
    target = int(rng.integers(config.min_objects, config.max_objects + 1))
    color_ids = rng.permutation(len(config.hues))[:target]
    values = _PALETTE_VALUE + rng.uniform(
        -_PALETTE_VALUE_JITTER, _PALETTE_VALUE_JITTER, size=target)
    seg = np.zeros((res, res), np.uint8)
    # visible[i] / needed[i]: current / minimum visible pixels of id i + 1.
    visible = np.zeros(target, np.int64)
    needed = np.zeros(target, np.float64)
    objects = []
    for k in range(target):
      obj_id = k + 1
      for _ in range(MAX_PLACEMENT_ATTEMPTS):
        shape_idx, size, rotation, position = _sample_placement(rng, config)
        (r0, r1, c0, c1), mask = shape_mask(shape_idx, position, size,
                                            rotation, res)
        area = int(np.count_nonzero(mask))
        if area < MIN_VISIBLE_PIXELS:
          continue
        if config.min_gap >= 0 and _too_close(seg, (r0, r1, c0, c1), mask,
                                              config.min_gap):
          continue
        window = seg[r0:r1, c0:c1]
        covered = np.bincount(window[mask], minlength=obj_id)[1:obj_id]
        if np.any(visible[:k] - covered < needed[:k]):
          continue
        window[mask] = obj_id
        visible[:k] -= covered
        visible[k] = area
        needed[k] = max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * area)
        objects.append((shape_idx, size, rotation, position))
        break
      else:
        break  # Could not place this object: stop adding objects.
    if len(objects) >= config.min_objects:
      break
  else:
    raise RuntimeError("Could not place min_objects="
                       f"{config.min_objects} objects; config too crowded.")

  n = len(objects)
  hsv = [colorsys.hsv_to_rgb(config.hues[c] / 360.0, 1.0, float(val))
         for c, val in zip(color_ids[:n], values[:n])]
  colors = _quantize(np.array(hsv, np.float64).reshape(n, 3))
  background = _quantize(np.array(
      BACKGROUND_COLORS[int(rng.integers(len(BACKGROUND_COLORS)))]))
  lut = np.round(np.concatenate([background[None], colors]) * 255.0).astype(
      np.uint8)
  visibility = np.zeros(config.max_objects, np.float32)
  visibility[:n] = 1.0
  return {
      "image": lut[seg],
      "segmentations": seg[..., None],
      "visibility": visibility,
      "num_objects": np.int32(n),
      "background_color": background,
      "objects": {
          "shape": np.array([o[0] for o in objects], np.int32),
          "color": colors,
          "position": np.array([o[3] for o in objects],
                               np.float32).reshape(n, 2),
          "size": np.array([o[1] for o in objects], np.float32),
          "rotation": np.array([o[2] for o in objects], np.float32),
      },
  }


def example_rng(config: ShapesConfig, split: str,
                index: int) -> np.random.Generator:
  """Deterministic generator of example `index` of `split`."""
  split_key = zlib.crc32(split.encode("utf-8"))
  return np.random.default_rng([config.seed, split_key, index])


def generate_example(config: ShapesConfig, split: str,
                     index: int) -> dict[str, Any]:
  """Renders example `index` of `split` exactly as stored by `Shapes`."""
  return render_scene(example_rng(config, split, index), config)


class Shapes(local_builder.LocallyGeneratedBuilder):
  """Synthetic 2D multi-object scenes with exact instance segmentations."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesConfig(name=f"{r}x{r}", resolution=r,
                   description=f"{r}x{r} images, 2-6 objects.")
      for r in (32, 64, 128)
  ]

  def features(self, config: ShapesConfig) -> tfds.features.FeaturesDict:
    res = config.resolution
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(res, res, 3)),
        "segmentations": tfds.features.Tensor(shape=(res, res, 1), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB),
        "visibility": tfds.features.Tensor(shape=(config.max_objects,), dtype=np.float32),
        "num_objects": tfds.features.Scalar(dtype=np.int32),
        "background_color": tfds.features.Tensor(shape=(3,), dtype=np.float32),
        "objects": tfds.features.Sequence({
            "shape": tfds.features.ClassLabel(names=SHAPES),
            "color": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "position": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "size": tfds.features.Tensor(shape=(), dtype=np.float32),
            "rotation": tfds.features.Tensor(shape=(), dtype=np.float32),
        }),
    })

  def generate(self, split: str, index: int) -> dict[str, Any]:
    return generate_example(self.builder_config, split, index)


def load(config: str | ShapesConfig = "64x64", split: str = "train",
         data_dir: str | os.PathLike[str] | None = None,
         **as_dataset_kwargs: Any) -> tf.data.Dataset:
  """Returns `split` of the shapes dataset, generating it on first use.

  Args:
    config: Builder config name ("32x32", "64x64", "128x128") or a
      `ShapesConfig`.
    split: TFDS split string, e.g. "train", "validation", "train[:10%]".
    data_dir: TFDS data directory (default: the TFDS default directory).
    **as_dataset_kwargs: Forwarded to `builder.as_dataset`.

  Returns:
    A `tf.data.Dataset` of feature dicts (see the module docstring).
  """
  builder = local_builder.prepared(Shapes(config=config, data_dir=data_dir), "shapes dataset")
  return builder.as_dataset(split=split, **as_dataset_kwargs)


def builder_configs() -> Mapping[str, ShapesConfig]:
  """The predefined configs by name."""
  return {c.name: c for c in Shapes.BUILDER_CONFIGS}


def config_from(data: ml_collections.ConfigDict) -> ShapesConfig:
  """The builder config of `data.shapes`; its name encodes the options."""
  options = dict(data.shapes)
  return ShapesConfig(name=local_builder.config_name(options), **options)


@DATA_SOURCES.register("shapes")
def load_source(data: ml_collections.ConfigDict, train: bool, num_shards: int,
                shard: int) -> tuple[tf.data.Dataset, int]:
  """Shard `shard` of `num_shards` of the train or validation split of `data.shapes`."""
  config = config_from(data)
  split = "train" if train else "validation"
  size = config.num_train if train else config.num_validation
  split = tfds.even_splits(split, n=num_shards)[shard]
  return load(config, split, data_dir=data.data_dir), size
