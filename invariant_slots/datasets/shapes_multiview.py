"""Synthetic multi-view 3D scenes, ray-traced in numpy, as a TFDS builder.

Each scene holds 3-6 coloured spheres and boxes resting on a ground plane
(z = 0), seen by `num_views` pinhole cameras on a hemisphere that look at the
scene centre. Every pixel is one ray through its centre, so the images and
instance ids are exact. Scenes are stored in the published MultiShapeNet-Hard
layout (sunds' `frames_spec`, see `invariant_slots.datasets.multishapenet`),
so the same loader reads both and derives the rays from the cameras:

  scene_name, frame_name:  string (the same).
  pose:            {R [3, 3], t [3]} float32, the identity (frame = scene).
  cameras/camera_0 ... camera_{V-1}:
    intrinsics:    image_width, image_height int32; K float32 [3, 3] in pixels
                   (principal point at the image centre); type "PERSPECTIVE";
                   distortion {radial [3], tangential [2]} zeros.
    extrinsics:    {R, t} float32, world to camera in OpenCV axes (x right,
                   y down, z forward).
    color_image:   uint8 PNG [H, W, 3].
    instance_image: labelled uint8 PNG [H, W, 1], 1 = background (ground and
                   sky), 2..N+1 = objects (the same id in every view).
    category_image: labelled uint8 PNG [H, W, 1], `CATEGORIES` indices.
    depth_image:   float32 [H, W, 1], distance along the unit ray, 0 for sky.

Shading is Lambertian under one directional light plus ambient light, without
shadows. Generation is deterministic given the config's seed, the split and
the example index, and never touches the network.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import zlib
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from invariant_slots.datasets import local_builder

BACKGROUND_ID = 1
CATEGORIES = ("background", "sphere", "box")
_LIGHT = np.array([0.4, -0.3, 0.87]) / np.linalg.norm([0.4, -0.3, 0.87])
_AMBIENT = 0.35
_SKY_COLOR = np.array([0.70, 0.80, 0.95])
_GROUND_COLORS = np.array([[0.45, 0.45, 0.45], [0.55, 0.52, 0.48], [0.40, 0.44, 0.48],
                           [0.60, 0.60, 0.58]])
_OBJECT_HUES = (0.0, 30.0, 58.0, 95.0, 130.0, 175.0, 205.0, 240.0, 275.0, 310.0)
_EPSILON = 1e-6


@dataclasses.dataclass(eq=False)
class ShapesMultiviewConfig(tfds.core.BuilderConfig):
  """Options of the synthetic multi-view dataset.

  Attributes:
    resolution: Image height and width in pixels.
    num_views: Cameras per scene.
    min_objects, max_objects: Objects per scene.
    num_train, num_validation: Scenes per split.
    seed: Base seed of the per-example generators.
    arena: Object centres lie in `[-arena, arena]^2`.
    min_size, max_size: Sphere radius / box half-side range.
    camera_distance: Radius of the camera hemisphere.
    min_elevation_deg, max_elevation_deg: Camera elevation range.
    fov_deg: Horizontal (= vertical) field of view.
  """

  resolution: int = 64
  num_views: int = 10
  min_objects: int = 3
  max_objects: int = 6
  num_train: int = 2000
  num_validation: int = 100
  seed: int = 0
  arena: float = 2.2
  min_size: float = 0.5
  max_size: float = 0.9
  camera_distance: float = 8.0
  min_elevation_deg: float = 30.0
  max_elevation_deg: float = 60.0
  fov_deg: float = 45.0

  def __post_init__(self):
    if not 1 <= self.min_objects <= self.max_objects <= len(_OBJECT_HUES):
      raise ValueError(f"Need 1 <= min_objects <= max_objects <= {len(_OBJECT_HUES)}, got "
                       f"{self.min_objects}, {self.max_objects}.")
    if self.resolution < 4 or self.num_views < 1:
      raise ValueError("resolution must be >= 4 and num_views >= 1.")


def look_at_camera(position: np.ndarray, target: np.ndarray = np.zeros(3)
                   ) -> np.ndarray:
  """Camera-to-world rotation `[3, 3]`: columns right, up, forward (z is world up)."""
  forward = target - position
  forward = forward / np.linalg.norm(forward)
  right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
  right = right / np.linalg.norm(right)
  up = np.cross(right, forward)
  return np.stack([right, up, forward], axis=1)


def pinhole_rays(position: np.ndarray, rotation: np.ndarray, height: int, width: int,
                 fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
  """Rays through the pixel centres of a pinhole camera.

  Pixel (i, j) (row i from the top) looks along
  `forward + u * tan(fov/2) * right + v * tan(fov/2) * up` with
  `u = 2 (j + 0.5) / width - 1` and `v = 1 - 2 (i + 0.5) / height`.

  Args:
    position: Camera centre `[3]`.
    rotation: Camera-to-world rotation `[3, 3]` (columns right, up, forward).
    height, width: Image size.
    fov_deg: Field of view across the image width (and height).

  Returns:
    origins, unit directions: float32 `[height, width, 3]`.
  """
  scale = np.tan(np.deg2rad(fov_deg) / 2.0)
  u = (2.0 * (np.arange(width) + 0.5) / width - 1.0) * scale
  v = (1.0 - 2.0 * (np.arange(height) + 0.5) / height) * scale
  local = np.stack(np.broadcast_arrays(u[None, :], v[:, None], 1.0), axis=-1)
  directions = local @ rotation.T
  directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
  origins = np.broadcast_to(position, directions.shape)
  return origins.astype(np.float32), directions.astype(np.float32)


def pinhole_camera(position: np.ndarray, rotation: np.ndarray, height: int, width: int,
                   fov_deg: float) -> dict[str, Any]:
  """The stored camera of `pinhole_rays`: intrinsics and world-to-camera extrinsics.

  `K` maps the camera-frame point `(u, -v, 1)` of pixel (i, j) in
  `pinhole_rays` to its centre `(j + 0.5, i + 0.5)`; the OpenCV camera axes
  are right, down (-up) and forward.
  """
  scale = np.tan(np.deg2rad(fov_deg) / 2.0)
  k = np.array([[width / (2.0 * scale), 0.0, width / 2.0],
                [0.0, height / (2.0 * scale), height / 2.0], [0.0, 0.0, 1.0]])
  world_to_camera = (rotation * np.array([1.0, -1.0, 1.0])).T
  return {
      "intrinsics": {"image_width": width, "image_height": height,
                     "K": k.astype(np.float32), "type": "PERSPECTIVE",
                     "distortion": {"radial": np.zeros(3, np.float32),
                                    "tangential": np.zeros(2, np.float32)}},
      "extrinsics": {"R": world_to_camera.astype(np.float32),
                     "t": (-world_to_camera @ position).astype(np.float32)},
  }


def orbit_cameras(num_frames: int, distance: float, elevation_deg: float
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
  """`(position, rotation)` of `num_frames` cameras on a circle around the origin."""
  elevation = np.deg2rad(elevation_deg)
  cameras = []
  for azimuth in np.linspace(0.0, 2.0 * np.pi, num_frames, endpoint=False):
    position = distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                    np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    cameras.append((position, look_at_camera(position)))
  return cameras


def intersect_spheres(origins: np.ndarray, directions: np.ndarray, centres: np.ndarray,
                      radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Nearest hit distance `[P, S]` (inf for misses) and normals `[P, S, 3]`."""
  offset = origins[:, None, :] - centres[None]  # [P, S, 3]
  b = np.einsum("pd,psd->ps", directions, offset)
  c = np.sum(offset**2, axis=-1) - radii[None] ** 2
  disc = b * b - c
  root = np.sqrt(np.maximum(disc, 0.0))
  t = np.where(-b - root > _EPSILON, -b - root, -b + root)
  t = np.where((disc >= 0) & (t > _EPSILON), t, np.inf)
  points = origins[:, None, :] + np.where(np.isfinite(t), t, 0.0)[..., None] * directions[:, None]
  normals = (points - centres[None]) / radii[None, :, None]
  return t, normals


def intersect_boxes(origins: np.ndarray, directions: np.ndarray, centres: np.ndarray,
                    half_sizes: np.ndarray, yaws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Slab test against boxes rotated by `yaws` about z; like `intersect_spheres`."""
  cos, sin = np.cos(yaws), np.sin(yaws)
  # World-to-box rotations [B, 3, 3] (rotate by -yaw about z).
  rot = np.zeros((len(yaws), 3, 3))
  rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = cos, sin, -sin, cos
  rot[:, 2, 2] = 1.0
  local_o = np.einsum("bij,pbj->pbi", rot, origins[:, None, :] - centres[None])
  local_d = np.einsum("bij,pj->pbi", rot, directions)
  with np.errstate(divide="ignore", invalid="ignore"):
    inverse = 1.0 / np.where(local_d == 0, 1e-12, local_d)
    t1 = (-half_sizes[None] - local_o) * inverse
    t2 = (half_sizes[None] - local_o) * inverse
  near = np.minimum(t1, t2)
  t_near = near.max(axis=-1)
  t_far = np.maximum(t1, t2).min(axis=-1)
  hit = (t_far >= np.maximum(t_near, _EPSILON)) & (t_near > _EPSILON)
  t = np.where(hit, t_near, np.inf)
  axis = near.argmax(axis=-1)
  local_n = -np.sign(np.take_along_axis(local_d, axis[..., None], -1)) * np.eye(3)[axis]
  normals = np.einsum("bji,pbj->pbi", rot, local_n)  # Back to the world frame.
  return t, normals


def trace(origins: np.ndarray, directions: np.ndarray, scene: dict[str, np.ndarray]
          ) -> dict[str, np.ndarray]:
  """What rays `[P, 3]` (unit directions) see.

  Returns:
    `color` float `[P, 3]`; uint8 `[P]` `instance` ids (objects get 2.. in the
    order of `scene["kinds"]`, the ground plane and the sky `BACKGROUND_ID`)
    and `category` (`CATEGORIES` index); `depth` float `[P]`, the distance to
    the hit, 0 for the sky.
  """
  kinds = scene["kinds"]
  spheres, boxes = np.flatnonzero(kinds == 0), np.flatnonzero(kinds == 1)
  num_rays = len(origins)
  t_all = np.full((num_rays, len(kinds)), np.inf)
  normals = np.zeros((num_rays, len(kinds), 3))
  if len(spheres):
    t_all[:, spheres], normals[:, spheres] = intersect_spheres(
        origins, directions, scene["centres"][spheres], scene["sizes"][spheres, 0])
  if len(boxes):
    t_all[:, boxes], normals[:, boxes] = intersect_boxes(
        origins, directions, scene["centres"][boxes], scene["sizes"][boxes],
        scene["yaws"][boxes])
  nearest = t_all.argmin(axis=1)
  hit = np.isfinite(t_all[np.arange(num_rays), nearest])
  normal = normals[np.arange(num_rays), nearest]
  shade = _AMBIENT + (1.0 - _AMBIENT) * np.maximum(normal @ _LIGHT, 0.0)
  object_color = scene["colors"][nearest] * shade[:, None]
  ground_hit = directions[:, 2] < 0
  ground_color = scene["ground_color"] * (_AMBIENT + (1.0 - _AMBIENT) * _LIGHT[2])
  background = np.where(ground_hit[:, None], ground_color, _SKY_COLOR)
  colors = np.where(hit[:, None], object_color, background)
  ids = np.where(hit, nearest + BACKGROUND_ID + 1, BACKGROUND_ID).astype(np.uint8)
  categories = np.where(hit, kinds[nearest] + 1, 0).astype(np.uint8)
  with np.errstate(divide="ignore"):
    ground_depth = np.where(ground_hit, -origins[:, 2] / directions[:, 2], 0.0)
  depths = np.where(hit, t_all[np.arange(num_rays), nearest], ground_depth)
  return {"color": colors, "instance": ids, "category": categories, "depth": depths}


def sample_scene(rng: np.random.Generator, config: ShapesMultiviewConfig) -> dict[str, np.ndarray]:
  """Random non-overlapping objects on the ground; footprints kept apart."""
  target = int(rng.integers(config.min_objects, config.max_objects + 1))
  kinds, centres, sizes, yaws, footprints = [], [], [], [], []
  for _ in range(100 * target):
    if len(kinds) == target:
      break
    kind = int(rng.integers(2))
    size = rng.uniform(config.min_size, config.max_size)
    footprint = size * (np.sqrt(2.0) if kind else 1.0)
    xy = rng.uniform(-config.arena, config.arena, size=2)
    if any(np.linalg.norm(xy - c[:2]) < footprint + f + 0.1 for c, f in zip(centres, footprints)):
      continue
    kinds.append(kind)
    centres.append(np.array([xy[0], xy[1], size]))
    sizes.append(np.full(3, size))
    yaws.append(rng.uniform(0.0, np.pi / 2) if kind else 0.0)
    footprints.append(footprint)
  hues = rng.permutation(len(_OBJECT_HUES))[:len(kinds)]
  colors = np.array([colorsys.hsv_to_rgb(_OBJECT_HUES[h] / 360.0, rng.uniform(0.6, 1.0),
                                         rng.uniform(0.8, 1.0)) for h in hues])
  return {"kinds": np.array(kinds), "centres": np.array(centres), "sizes": np.array(sizes),
          "yaws": np.array(yaws), "colors": colors,
          "ground_color": _GROUND_COLORS[rng.integers(len(_GROUND_COLORS))]}


def sample_cameras(rng: np.random.Generator, config: ShapesMultiviewConfig
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
  """`num_views` cameras at random azimuths and elevations, looking at the origin."""
  cameras = []
  for _ in range(config.num_views):
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.deg2rad(rng.uniform(config.min_elevation_deg, config.max_elevation_deg))
    position = config.camera_distance * np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
         np.sin(elevation)])
    cameras.append((position, look_at_camera(position)))
  return cameras


def render_views(scene: dict[str, np.ndarray], cameras, resolution: int, fov_deg: float
                 ) -> dict[str, np.ndarray]:
  """Images `[V, H, W, C]` of `scene` from each `(position, rotation)` camera.

  `color_image` uint8, `instance_image` and `category_image` uint8 (C = 1),
  `depth_image` float32 (C = 1).
  """
  rays = [pinhole_rays(p, r, resolution, resolution, fov_deg) for p, r in cameras]
  origins = np.stack([o for o, _ in rays])
  directions = np.stack([d for _, d in rays])
  seen = trace(origins.reshape(-1, 3).astype(np.float64),
               directions.reshape(-1, 3).astype(np.float64), scene)
  shape = origins.shape[:3]
  return {
      "color_image": np.round(np.clip(seen["color"], 0, 1) * 255).astype(np.uint8).reshape(
          shape + (3,)),
      "instance_image": seen["instance"].reshape(shape + (1,)),
      "category_image": seen["category"].reshape(shape + (1,)),
      "depth_image": seen["depth"].astype(np.float32).reshape(shape + (1,)),
  }


def _example_rng(config: ShapesMultiviewConfig, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([config.seed, zlib.crc32(split.encode()), index])


def scene_of(config: ShapesMultiviewConfig, split: str, index: int) -> dict[str, np.ndarray]:
  """The objects of example `index` of `split` (`sample_scene`); object `j` has id `j + 2`."""
  return sample_scene(_example_rng(config, split, index), config)


@functools.lru_cache(maxsize=8)
def _generator_config(options: tuple[tuple[str, Any], ...]) -> ShapesMultiviewConfig:
  """The generator's config for sorted `(option, value)` pairs, built once per variant."""
  return ShapesMultiviewConfig(name=local_builder.config_name(dict(options)), **dict(options))


def scene_named(options: Mapping[str, Any], scene_name: str | bytes) -> dict[str, np.ndarray]:
  """The objects (`scene_of`) of the example a `scene_name` feature names ("<split>_<index>").

  `options`: the generator's options, as in `config.data.shapes_multiview`.
  """
  config = _generator_config(tuple(sorted(options.items())))
  name = scene_name.decode() if isinstance(scene_name, bytes) else scene_name
  split, index = name.rsplit("_", 1)
  return scene_of(config, split, int(index))


def generate_example(config: ShapesMultiviewConfig, split: str, index: int) -> dict[str, Any]:
  """Example `index` of `split`, exactly as stored (see the module docstring)."""
  rng = _example_rng(config, split, index)
  scene = sample_scene(rng, config)
  cameras = sample_cameras(rng, config)
  views = render_views(scene, cameras, config.resolution, config.fov_deg)
  name = f"{split}_{index:06d}"
  return {
      "scene_name": name,
      "frame_name": name,
      "pose": {"R": np.eye(3, dtype=np.float32), "t": np.zeros(3, np.float32)},
      "cameras": {
          f"camera_{view}": {
              **pinhole_camera(position, rotation, config.resolution, config.resolution,
                               config.fov_deg),
              **{key: images[view] for key, images in views.items()}}
          for view, (position, rotation) in enumerate(cameras)},
  }


def _pose_features() -> dict[str, tfds.features.Tensor]:
  return {"R": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
          "t": tfds.features.Tensor(shape=(3,), dtype=np.float32)}


def _camera_features(height: int, width: int) -> dict[str, Any]:
  vector = lambda size: tfds.features.Tensor(shape=(size,), dtype=np.float32)
  return {
      "intrinsics": {"image_width": np.int32, "image_height": np.int32,
                     "K": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
                     "type": tfds.features.Text(),
                     "distortion": {"radial": vector(3), "tangential": vector(2)}},
      "extrinsics": _pose_features(),
      "color_image": tfds.features.Image(shape=(height, width, 3)),
      "category_image": tfds.features.LabeledImage(labels=list(CATEGORIES),
                                                   shape=(height, width, 1)),
      "instance_image": tfds.features.LabeledImage(labels=None, shape=(height, width, 1)),
      "depth_image": tfds.features.Image(shape=(height, width, 1), dtype=np.float32),
  }


def features(num_views: int, height: int, width: int) -> tfds.features.FeaturesDict:
  """sunds' `frames_spec` of MultiShapeNet-Hard for `num_views` cameras of `height x width`."""
  return tfds.features.FeaturesDict({
      "scene_name": tfds.features.Text(),
      "frame_name": tfds.features.Text(),
      "pose": _pose_features(),
      "cameras": {f"camera_{view}": _camera_features(height, width)
                  for view in range(num_views)},
  })


class ShapesMultiview(local_builder.LocallyGeneratedBuilder):
  """Ray-traced multi-view scenes of spheres and boxes, stored per camera like MSN-Hard."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "2.0.0": "The published MultiShapeNet-Hard layout: cameras, not rays."}
  BUILDER_CONFIGS = [ShapesMultiviewConfig(name=f"{r}x{r}", resolution=r) for r in (32, 64)]

  def features(self, config: ShapesMultiviewConfig) -> tfds.features.FeaturesDict:
    return features(config.num_views, config.resolution, config.resolution)

  def generate(self, split: str, index: int) -> dict[str, Any]:
    return generate_example(self.builder_config, split, index)

