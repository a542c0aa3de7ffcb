"""Multi-view pipeline: rays, ray tracer, MSN-Hard layout loader, OSRT model, render command."""

import dataclasses
import os
import re
import textwrap
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import corrector_params
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots import pipelines
from invariant_slots.datasets import multishapenet
from invariant_slots.datasets import shapes_multiview
from invariant_slots import config_files
from invariant_slots.lib import input_pipeline
from invariant_slots.lib import model_specs
from invariant_slots.lib import oracle_slots
from invariant_slots.datasets import ops as preprocessing
from invariant_slots.lib import slot_probe
from invariant_slots.lib import training
from invariant_slots.modules import multiview
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.registry import ConfigError
from tests import training_utils

CONFIG = os.path.join(training_utils.REPO, "configs", "shapes_multiview.py")
MSN_CONFIG = os.path.join(training_utils.REPO, "configs", "msn_hard.py")

# `configs/shapes_multiview.py` shrunk to seconds: 16x16 views, tiny networks.
TINY = {
    "data.shapes_multiview.resolution": 16,
    "data.shapes_multiview.num_train": 8,
    "data.shapes_multiview.num_validation": 2,
    "data.num_eval_examples": 2,
    "data.resolution": (16, 16),
    "data.shuffle_buffer_size": 8,
    "data.preprocess_train": ["multiview_train(5, 64, 0)"],
    "batch_size": 2,
    "num_train_steps": 2,
    "warmup_steps": 1,
    "log_loss_every_steps": 1,
    "eval_every_steps": 2,
    "checkpoint_every_steps": 2,
    "num_eval_images": 1,
    "model.slot_size": 32,
    "model.encoder": dict(name="SRT", features=[8, 16], hidden_size=32, num_layers=1, num_heads=2,
                          mlp_size=32, output_size=32, ray_input="patches"),
    "model.corrector.mlp_size": 32,
    "model.decoder": dict(name="RayBroadcast", hidden_sizes=[32, 32]),
    "render": dict(num_frames=3, fov_deg=45.0),
}


def tiny_config(data_dir: str, **overrides):
  return config_files.load_config(CONFIG, **{**TINY, "data.data_dir": data_dir, **overrides})


@pytest.fixture(scope="session")
def multiview_data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds_multiview"))


def test_pinhole_rays_hit_the_image_plane_at_pixel_centres():
  distance, fov, height, width = 5.0, 60.0, 6, 8
  position = np.array([distance, 0.0, 0.0])  # Looking along -x: right = +y, up = +z.
  origins, directions = shapes_multiview.pinhole_rays(
      position, shapes_multiview.look_at_camera(position), height, width, fov)
  assert origins.shape == directions.shape == (height, width, 3)
  np.testing.assert_allclose(origins, np.broadcast_to(position, origins.shape))
  np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-6)
  # Where each ray meets the plane x = 0 through the look-at point.
  hits = origins + (distance / -directions[..., :1]) * directions
  half = distance * np.tan(np.radians(fov) / 2)
  expected_y = half * (2 * (np.arange(width) + 0.5) / width - 1)
  expected_z = half * (1 - 2 * (np.arange(height) + 0.5) / height)
  np.testing.assert_allclose(hits[..., 0], 0.0, atol=1e-5)
  np.testing.assert_allclose(hits[..., 1], np.broadcast_to(expected_y, (height, width)),
                             atol=1e-5)
  np.testing.assert_allclose(hits[..., 2], np.broadcast_to(expected_z[:, None], (height, width)),
                             atol=1e-5)


def test_tracer_ids_match_the_analytic_sphere_projection():
  config = shapes_multiview.ShapesMultiviewConfig(name="t", resolution=48, num_views=3)
  centre, radius = np.array([0.7, -0.4, 0.8]), 0.8
  scene = {"kinds": np.array([0]), "centres": centre[None], "sizes": np.full((1, 3), radius),
           "yaws": np.zeros(1), "colors": np.ones((1, 3)), "ground_color": np.zeros(3)}
  cameras = shapes_multiview.sample_cameras(np.random.default_rng(1), config)
  views = shapes_multiview.render_views(scene, cameras, config.resolution, config.fov_deg)
  scale = np.tan(np.radians(config.fov_deg) / 2)
  pixels = (np.arange(config.resolution) + 0.5) / config.resolution
  u, v = np.meshgrid((2 * pixels - 1) * scale, (1 - 2 * pixels) * scale)
  for (position, rotation), ids in zip(cameras, views["instance_image"][..., 0]):
    # Image-plane points q = (u, v, 1) see the sphere iff q^T M q >= 0 with the
    # cone matrix M = c c^T - (|c|^2 - r^2) I of the camera-frame centre c.
    c = rotation.T @ (centre - position)
    q = np.stack([u, v, np.ones_like(u)], axis=-1)
    cone = (q @ c) ** 2 - (q * q).sum(-1) * (c @ c - radius**2)
    clear = np.abs(cone) > 0.02 * (q * q).sum(-1)  # Skip pixels on the outline.
    inside = cone > 0
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(ids[clear] == 2, inside[clear])
    assert set(np.unique(ids)) <= {1, 2}
  # Depth: hit points lie on the sphere, on the ground, or the ray sees the sky (0).
  for (position, rotation), ids, depth in zip(cameras, views["instance_image"][..., 0],
                                              views["depth_image"][..., 0]):
    origins, directions = shapes_multiview.pinhole_rays(position, rotation, config.resolution,
                                                        config.resolution, config.fov_deg)
    points = origins + depth[..., None] * directions
    np.testing.assert_allclose(np.linalg.norm(points[ids == 2] - centre, axis=-1), radius,
                               atol=1e-4)
    ground = (ids == 1) & (directions[..., 2] < 0)
    np.testing.assert_allclose(points[ground][:, 2], 0.0, atol=1e-4)
    np.testing.assert_array_equal(depth[(ids == 1) & ~ground], 0.0)


def _stacked(example, key):
  return np.stack([example["cameras"][f"camera_{v}"][key] for v in range(10)])


def test_generated_scenes_are_deterministic_with_consistent_ids():
  config = shapes_multiview.ShapesMultiviewConfig(name="t", resolution=16)
  first = shapes_multiview.generate_example(config, "train", 3)
  again = shapes_multiview.generate_example(config, "train", 3)
  other = shapes_multiview.generate_example(config, "train", 4)
  colors = _stacked(first, "color_image")
  np.testing.assert_array_equal(colors, _stacked(again, "color_image"))
  assert not np.array_equal(colors, _stacked(other, "color_image"))
  assert colors.shape == (10, 16, 16, 3)
  ids = _stacked(first, "instance_image")
  assert ids.min() == shapes_multiview.BACKGROUND_ID and ids.max() <= 1 + config.max_objects
  # Ids are per object, not per view: each object keeps one colour in every view.
  for object_id in np.unique(ids)[1:]:
    object_colors = colors[ids[..., 0] == object_id].astype(float)
    hue = object_colors / np.maximum(object_colors.sum(-1, keepdims=True), 1)
    assert np.ptp(hue, axis=0).max() < 0.1
  categories = _stacked(first, "category_image")
  np.testing.assert_array_equal(categories == 0, ids == shapes_multiview.BACKGROUND_ID)


# The published MultiShapeNet-Hard layout, written from sunds' `frames_spec`
# (sunds/core/specs.py, sunds/datasets/kubric/utils.py), independently of
# `shapes_multiview.features`: TFDS builder `kubric_frames`, config
# `multi_shapenet_conditional`, version 2.8.0, splits train/val/test.
def _published_features(height, width, num_cameras=10):
  def pose():
    return {"R": tfds.features.Tensor(shape=(3, 3), dtype=tf.float32),
            "t": tfds.features.Tensor(shape=(3,), dtype=tf.float32)}

  def camera():
    return {
        "intrinsics": {
            "image_width": tf.int32, "image_height": tf.int32,
            "K": tfds.features.Tensor(shape=(3, 3), dtype=tf.float32),
            "type": tfds.features.Text(),
            "distortion": {"radial": tfds.features.Tensor(shape=(3,), dtype=tf.float32),
                           "tangential": tfds.features.Tensor(shape=(2,), dtype=tf.float32)}},
        "extrinsics": pose(),
        "color_image": tfds.features.Image(shape=(height, width, 3)),
        "category_image": tfds.features.LabeledImage(labels=["background", "chair", "table"],
                                                     shape=(height, width, 1)),
        "instance_image": tfds.features.LabeledImage(labels=None, shape=(height, width, 1)),
        "depth_image": tfds.features.Image(shape=(height, width, 1), dtype=tf.float32),
    }

  return tfds.features.FeaturesDict({
      "scene_name": tfds.features.Text(), "frame_name": tfds.features.Text(), "pose": pose(),
      "cameras": {f"camera_{i}": camera() for i in range(num_cameras)}})


@dataclasses.dataclass(eq=False)
class _FramesConfig(tfds.core.BuilderConfig):
  height: int = 8
  width: int = 12
  num_scenes: tuple[tuple[str, int], ...] = (("train", 3), ("val", 2), ("test", 2))


# Non-square images and pixels; each camera looks at its own target, which K
# puts at the centre of pixel `_TARGET_PIXEL` (row, column).
_TARGET_PIXEL = (3, 7)
_POSE_ANGLE, _POSE_T = np.radians(30.0), np.array([0.5, -1.0, 0.2])


def _published_scene(config, split, index):
  """Scene `index` of `split` as stored, and each camera's centre and target `[10, 3]`."""
  rng = np.random.default_rng([zlib.crc32(split.encode()), index])
  c, s_ = np.cos(_POSE_ANGLE), np.sin(_POSE_ANGLE)
  pose_r = np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])  # scene <- frame
  k = np.array([[7.0, 0.0, _TARGET_PIXEL[1] + 0.5], [0.0, 9.0, _TARGET_PIXEL[0] + 0.5],
                [0.0, 0.0, 1.0]])
  shape = (config.height, config.width)
  cameras, centres, targets = {}, [], []
  for view in range(10):
    target = rng.uniform(-1.0, 1.0, 3)
    centre = target + rng.uniform(6.0, 8.0) * _unit(rng.normal(size=3))
    forward = _unit(target - centre)
    down = _unit(np.cross(forward, rng.normal(size=3)))  # A random roll.
    world_to_camera = np.stack([np.cross(down, forward), down, forward])  # OpenCV rows.
    rotation = world_to_camera @ pose_r  # camera <- frame
    translation = world_to_camera @ (_POSE_T - centre)
    cameras[f"camera_{view}"] = {
        "intrinsics": {"image_width": config.width, "image_height": config.height,
                       "K": k.astype(np.float32), "type": "PERSPECTIVE",
                       "distortion": {"radial": np.zeros(3, np.float32),
                                      "tangential": np.zeros(2, np.float32)}},
        "extrinsics": {"R": rotation.astype(np.float32), "t": translation.astype(np.float32)},
        "color_image": rng.integers(0, 256, shape + (3,), dtype=np.uint8),
        "category_image": rng.integers(0, 3, shape + (1,), dtype=np.uint8),
        "instance_image": rng.integers(1, 5, shape + (1,), dtype=np.uint8),
        "depth_image": rng.uniform(1.0, 9.0, shape + (1,)).astype(np.float32),
    }
    centres.append(centre)
    targets.append(target)
  name = f"scene_{split}_{index}"
  example = {"scene_name": name, "frame_name": name,
             "pose": {"R": pose_r.astype(np.float32), "t": _POSE_T.astype(np.float32)},
             "cameras": cameras}
  return example, np.array(centres), np.array(targets)


def _unit(v):
  return v / np.linalg.norm(v)


class KubricFrames(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A few random scenes in the published MultiShapeNet-Hard layout."""

  VERSION = tfds.core.Version("2.8.0")

  def _info(self):
    config = self.builder_config
    return tfds.core.DatasetInfo(builder=self,
                                 features=_published_features(config.height, config.width))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split, count)
            for split, count in self.builder_config.num_scenes}

  def _generate_examples(self, split, count):
    for index in range(count):
      yield index, _published_scene(self.builder_config, split, index)[0]


def write_published_msn(data_dir: str, **options) -> None:
  """Writes the tiny dataset under `data_dir/kubric_frames/multi_shapenet_conditional/2.8.0`."""
  config = _FramesConfig(name="multi_shapenet_conditional", **options)
  KubricFrames(config=config, data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))


@pytest.fixture(scope="session")
def msn_data_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("tfds_msn"))
  write_published_msn(data_dir)
  return data_dir


def _msn_data(data_dir, **overrides):
  return config_files.load_config(MSN_CONFIG, **{"data.data_dir": data_dir,
                                                    "data.num_eval_examples": 0,
                                                    **overrides}).data


def test_published_layout_is_where_tfds_puts_it(msn_data_dir):
  directory = os.path.join(msn_data_dir, "kubric_frames", "multi_shapenet_conditional", "2.8.0")
  assert multishapenet.msn_directory(msn_data_dir) == directory
  shards = sorted(f.split(".tfrecord")[0] for f in os.listdir(directory) if "tfrecord" in f)
  assert shards == ["kubric_frames-test", "kubric_frames-train", "kubric_frames-val"]


def test_loader_stacks_the_cameras_of_the_published_layout(msn_data_dir):
  config = _FramesConfig(name="multi_shapenet_conditional")
  data = _msn_data(msn_data_dir)
  assert data.train_split == "train" and data.eval_split == "val"
  evaluation, size = multishapenet.load_multi_shapenet(data, False, 1, 0)
  scenes = list(evaluation.as_numpy_iterator())
  assert size == len(scenes) == 2
  assert sorted(scenes[0]) == ["color_image", "instance_image", "ray_directions",
                               "ray_origins", "scene_name"]
  for scene in scenes:
    index = int(scene["scene_name"].decode().rsplit("_", 1)[1])
    written, _, _ = _published_scene(config, "val", index)
    np.testing.assert_array_equal(scene["color_image"], _stacked(written, "color_image"))
    np.testing.assert_array_equal(scene["instance_image"], _stacked(written, "instance_image"))
    assert scene["ray_origins"].shape == scene["ray_directions"].shape == (10, 8, 12, 3)
  for split, count in (("test", 2), ("train", 3)):
    data.eval_split = split
    assert multishapenet.load_multi_shapenet(data, False, 1, 0)[1] == count
  train, _ = multishapenet.load_multi_shapenet(data, True, 1, 0)
  indices = [int(x["sample_index"]) for x in train.take(7).as_numpy_iterator()]
  assert indices == list(range(7))  # Repeats past the 3 scenes, numbering each pass.
  data.eval_split = "validation"
  with pytest.raises(ConfigError, match=r"not a split of kubric_frames.*'test', 'train', 'val'"):
    multishapenet.load_multi_shapenet(data, False, 1, 0)


def test_rays_pass_through_what_the_cameras_project_there(msn_data_dir):
  config = _FramesConfig(name="multi_shapenet_conditional")
  evaluation, _ = multishapenet.load_multi_shapenet(_msn_data(msn_data_dir), False, 1, 0)
  for scene in evaluation.as_numpy_iterator():
    index = int(scene["scene_name"].decode().rsplit("_", 1)[1])
    written, centres, targets = _published_scene(config, "val", index)
    origins, directions = scene["ray_origins"], scene["ray_directions"]
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(origins, np.broadcast_to(centres[:, None, None], origins.shape),
                               atol=1e-4)
    # Each camera's target projects to the centre of `_TARGET_PIXEL`: that pixel's ray hits it.
    row, column = _TARGET_PIXEL
    to_target = targets - centres
    along = np.sum(to_target * directions[:, row, column], axis=-1)
    assert (along > 0).all()
    np.testing.assert_allclose(to_target, along[:, None] * directions[:, row, column], atol=1e-4)
    # Points along every ray project, with K and the extrinsics, to the ray's pixel centre.
    pose = written["pose"]
    pixels = np.stack(np.meshgrid(np.arange(12) + 0.5, np.arange(8) + 0.5), axis=-1)
    for view in range(10):
      camera = written["cameras"][f"camera_{view}"]
      for distance in (0.5, 3.0, 20.0):
        points = origins[view] + distance * directions[view]  # [H, W, 3] in the scene frame.
        in_frame = (points - pose["t"]) @ pose["R"]  # R^T (x - t).
        in_camera = in_frame @ camera["extrinsics"]["R"].T + camera["extrinsics"]["t"]
        projected = in_camera @ camera["intrinsics"]["K"].T
        assert (projected[..., 2] > 0).all()
        np.testing.assert_allclose(projected[..., :2] / projected[..., 2:], pixels, atol=1e-3)


def test_embedded_twin_writes_the_published_layout():
  twin = shapes_multiview.features(10, 8, 12).get_tensor_info()
  assert twin == _published_features(8, 12).get_tensor_info()


def test_embedded_twin_loader_rays_are_the_rendered_rays(tmp_path):
  options = dict(resolution=8, num_train=1, num_validation=2, seed=3)
  data = config_files.load_config(CONFIG, **{
      "data.data_dir": str(tmp_path), "data.shapes_multiview": options,
      "data.num_eval_examples": 0}).data
  evaluation, size = multishapenet.load_shapes_multiview(data, False, 1, 0)
  assert size == 2
  config = shapes_multiview.ShapesMultiviewConfig(name="t", **options)
  for scene in evaluation.as_numpy_iterator():
    split, index = scene["scene_name"].decode().rsplit("_", 1)
    rng = np.random.default_rng([config.seed, zlib.crc32(split.encode()), int(index)])
    scene_objects = shapes_multiview.sample_scene(rng, config)
    cameras = shapes_multiview.sample_cameras(rng, config)
    for view, (position, rotation) in enumerate(cameras):
      origins, directions = shapes_multiview.pinhole_rays(position, rotation, 8, 8,
                                                          config.fov_deg)
      np.testing.assert_allclose(scene["ray_origins"][view], origins, atol=1e-5)
      np.testing.assert_allclose(scene["ray_directions"][view], directions, atol=1e-5)
    views = shapes_multiview.render_views(scene_objects, cameras, 8, config.fov_deg)
    np.testing.assert_array_equal(scene["color_image"], views["color_image"])
    np.testing.assert_array_equal(scene["instance_image"], views["instance_image"])


def test_missing_msn_data_names_the_bucket_and_the_synthetic_config(tmp_path):
  with pytest.raises(ConfigError) as error:
    multishapenet.msn_builder(str(tmp_path))
  message = str(error.value)
  assert "\n" not in message
  assert "gs://kubric-public/tfds/kubric_frames/multi_shapenet_conditional/2.8.0" in message
  assert os.path.join(str(tmp_path), "kubric_frames/multi_shapenet_conditional/2.8.0") in message
  assert "configs/shapes_multiview.py" in message


# `configs/msn_hard.py` on the tiny published-layout dataset: data options and
# the tiny networks of `TINY`.
MSN_TINY = {
    **{key: value for key, value in TINY.items() if not key.startswith("data.")},
    "data.resolution": (8, 12),
    "data.num_eval_examples": 2,
    "data.shuffle_buffer_size": 4,
    "data.preprocess_train": ["multiview_train(5, 64, 0)"],
}


def test_msn_hard_trains_and_evaluates_on_the_published_layout(msn_data_dir, tmp_path):
  config = config_files.load_config(MSN_CONFIG, **{**MSN_TINY, "data.data_dir": msn_data_dir})
  scalars = training_utils.train_and_evaluate(config, str(tmp_path / "run"))
  for key in ("eval/psnr", "eval/fg_ari", "eval/loss", "eval/collapse/attention_entropy",
              "eval/collapse/slot_similarity"):
    assert np.isfinite(scalars[key]), (key, scalars)
  assert training_utils.read_scalars(str(tmp_path / "run"), "train/loss").keys() == {1, 2}


def _scene_features(num_views=10, size=4, sample_index=0):
  rng = np.random.default_rng(0)
  return {
      "color_image": tf.constant(rng.integers(0, 256, (num_views, size, size, 3)), tf.uint8),
      "ray_origins": tf.constant(rng.normal(size=(num_views, size, size, 3)), tf.float32),
      "ray_directions": tf.constant(rng.normal(size=(num_views, size, size, 3)), tf.float32),
      "instance_image": tf.constant(rng.integers(1, 5, (num_views, size, size, 1)), tf.uint8),
      "sample_index": tf.constant(sample_index, tf.int64),
  }


def test_train_op_draws_target_rays_from_the_held_out_views_only():
  features = _scene_features()
  op = preprocessing.parse_op("multiview_train(4, 30, 7)")
  out = {k: v.numpy() for k, v in op(dict(features)).items()}
  assert out["input_image"].shape == (4, 4, 4, 3) and out["target_color"].shape == (30, 3)
  origins = features["ray_origins"].numpy()
  # Input views and target rays partition the views; no ray is drawn twice.
  input_views = [int(np.flatnonzero((origins == view).all(axis=(1, 2, 3)))[0])
                 for view in out["input_origins"]]
  target_views = [int(np.flatnonzero((origins == ray).all(axis=-1).any(axis=(1, 2)))[0])
                  for ray in out["target_origins"]]
  assert len(set(input_views)) == 4 and not set(input_views) & set(target_views)
  assert len(np.unique(out["target_origins"], axis=0)) == 30
  again = op(dict(features))
  np.testing.assert_array_equal(again["target_origins"], out["target_origins"])
  later = op(dict(_scene_features(sample_index=1)))
  assert not np.array_equal(later["target_origins"], out["target_origins"])


def test_eval_op_keeps_view_order_and_shifts_ids():
  features = _scene_features()
  out = preprocessing.parse_op("multiview_eval(5)")(dict(features))
  np.testing.assert_allclose(out["target_color"].numpy(),
                             features["color_image"].numpy()[5:].reshape(-1, 3) / 255.0)
  np.testing.assert_array_equal(out["target_ids"].numpy(),
                                features["instance_image"].numpy()[5:].reshape(-1) - 1)
  with pytest.raises(ConfigError, match="num_input_views"):
    preprocessing.parse_op("multiview_eval(10)")(dict(features))


def test_targets_from_the_inputs_reconstruct_the_input_views():
  features = _scene_features()
  out = preprocessing.parse_op("multiview_eval(2, targets='inputs')")(dict(features))
  np.testing.assert_allclose(out["target_color"].numpy(),
                             features["color_image"].numpy()[:2].reshape(-1, 3) / 255.0)
  train = preprocessing.parse_op("multiview_train(1, 12, 0, targets='inputs')")(dict(features))
  view = train["input_origins"].numpy()[0].reshape(-1, 3)
  assert all((view == ray).all(axis=-1).any() for ray in train["target_origins"].numpy())
  with pytest.raises(ConfigError, match="targets='novel'.*held_out, inputs"):
    preprocessing.parse_op("multiview_eval(2, targets='novel')")


def _unit_vectors(rng, shape):
  vectors = rng.normal(size=shape)
  return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def test_triangulate_is_the_weighted_least_squares_point_of_the_rays():
  rng = np.random.default_rng(3)
  directions = _unit_vectors(rng, (2, 9, 3))
  weights = rng.uniform(size=(2, 4, 9))
  weights /= weights.sum(-1, keepdims=True)
  # Rays through one point: every slot finds it, whatever its weights.
  point = rng.normal(size=(2, 1, 3))
  origins = point - rng.uniform(1.0, 5.0, size=(2, 9, 1)) * directions
  found = multiview.triangulate(jnp.asarray(weights), jnp.asarray(origins),
                                jnp.asarray(directions), prior=0.0)
  np.testing.assert_allclose(found, np.broadcast_to(point, (2, 4, 3)), atol=1e-4)
  # Any rays: the least-squares solution of sqrt(w_t) (I - d_t d_t^T)(p - o_t) = 0
  # with the prior's rows sqrt(prior) p = 0 (numpy's lstsq).
  origins = rng.normal(size=(2, 9, 3))
  found = multiview.triangulate(jnp.asarray(weights), jnp.asarray(origins),
                                jnp.asarray(directions), prior=0.1)
  for b, k in [(0, 0), (1, 3)]:
    projectors = np.eye(3) - directions[b, :, :, None] * directions[b, :, None, :]
    scale = np.sqrt(weights[b, k])[:, None, None]
    rows = np.concatenate([(scale * projectors).reshape(-1, 3), np.sqrt(0.1) * np.eye(3)])
    rhs = np.concatenate([(scale * projectors @ origins[b, :, :, None]).reshape(-1), np.zeros(3)])
    np.testing.assert_allclose(found[b, k], np.linalg.lstsq(rows, rhs, rcond=None)[0],
                               rtol=1e-4, atol=1e-5)


def test_ray_broadcast_decoder_follows_the_slots_and_their_positions():
  decoder = multiview.RayBroadcastDecoder(hidden_sizes=(16, 16),
                                          ray_encoding=multiview.RayEncoding(2, 0, 2, 0))
  rng = np.random.default_rng(4)
  slots = jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float32)
  positions = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
  origins = jnp.asarray(rng.normal(size=(2, 10, 3)), jnp.float32)
  directions = jnp.asarray(_unit_vectors(rng, (2, 10, 3)), jnp.float32)
  params = decoder.init(jax.random.PRNGKey(0), slots, positions, origins, directions)
  out = decoder.apply(params, slots, positions, origins, directions)
  assert out["rgb"].shape == (2, 10, 3) and out["masks"].shape == (2, 10, 4)
  np.testing.assert_allclose(out["masks"].sum(-1), 1.0, rtol=1e-5)
  # Permuting the slots (with their positions) permutes the masks only.
  order = np.array([2, 0, 3, 1])
  permuted = decoder.apply(params, slots[:, order], positions[:, order], origins, directions)
  np.testing.assert_allclose(permuted["masks"], out["masks"][..., order], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(permuted["rgb"], out["rgb"], rtol=1e-5, atol=1e-6)
  moved = decoder.apply(params, slots, positions + 0.5, origins, directions)
  assert np.abs(moved["masks"] - out["masks"]).max() > 1e-4


def test_osrt_slot_positions_are_where_the_input_rays_meet():
  config = tiny_config("/unused")
  model = multiview.build_osrt(config)
  rng = np.random.default_rng(5)
  point = np.array([0.3, -0.2, 0.5])
  # Every pixel's ray passes through `point` from the same distance, so every
  # patch's mean ray does too.
  directions = _unit_vectors(rng, (1, 2, 16, 16, 3))
  origins = point - 4.0 * directions
  rays = jnp.asarray(rng.uniform(size=(1, 6, 3)), jnp.float32)
  batch = {"input_image": jnp.asarray(rng.uniform(size=(1, 2, 16, 16, 3)), jnp.float32),
           "input_origins": jnp.asarray(origins, jnp.float32),
           "input_directions": jnp.asarray(directions, jnp.float32),
           "target_origins": rays, "target_directions": rays}
  key = jax.random.PRNGKey(0)
  outputs, _ = model.init_with_output({"params": key, "slots": key}, batch)
  assert outputs["positions"].shape == (1, config.model.num_slots, 3)
  # The prior (1e-2) pulls the point towards the origin by about 1.5 %.
  np.testing.assert_allclose(outputs["positions"][0], np.broadcast_to(point, (7, 3)), atol=1e-2)


def test_probe_measures_slot_points_and_a_linear_readout_of_the_slots():
  rng = np.random.default_rng(6)
  scenes, rays = 8, 60
  centres = [rng.uniform(-2.0, 2.0, size=(3, 3)) for _ in range(scenes)]
  # Every object (ids 1-3) is seen; slot order[j] covers object j.
  target_ids = np.stack([rng.permutation(np.arange(rays) % 4) for _ in range(scenes)])
  order = np.array([2, 0, 3, 1])
  pred_ids = order[target_ids]
  mixing = rng.normal(size=(3, 6))
  slots = rng.normal(size=(scenes, 4, 6))
  positions = rng.normal(size=(scenes, 4, 3))
  for scene, scene_centres in enumerate(centres):
    positions[scene, order[1:]] = scene_centres + 0.1
    slots[scene, order[1:]] = scene_centres @ mixing  # The slots hold the centres linearly.
  result = slot_probe.probe(slots, positions, pred_ids, target_ids, centres)
  assert result["objects"] == 3 * scenes
  np.testing.assert_allclose(result["position_error"], 0.1 * np.sqrt(3.0), rtol=1e-6)
  assert result["probe_error"] < 0.05 < 0.5 < result["baseline_error"]
  np.testing.assert_array_equal(slot_probe.covering_slots(pred_ids[0], target_ids[0], 3), order[1:])
  with pytest.raises(ValueError, match="at least 4 scenes"):
    slot_probe.probe(slots[:3], positions[:3], pred_ids[:3], target_ids[:3], centres[:3])


def test_oracle_slot_j_plus_1_is_the_object_the_eval_calls_j_plus_1():
  config = shapes_multiview.ShapesMultiviewConfig(name="t", resolution=16, num_views=2)
  example = shapes_multiview.generate_example(config, "validation", 3)
  scene = shapes_multiview.scene_of(config, "validation", 3)
  features, positions = oracle_slots.object_slots(scene, num_slots=8)
  num_objects = len(scene["kinds"])
  assert features.shape == (8, oracle_slots.FEATURE_SIZE) and positions.shape == (8, 3)
  np.testing.assert_array_equal(features[:, 0], np.arange(8) <= num_objects)  # Present.
  np.testing.assert_array_equal(features[:, 1], np.arange(8) == 0)  # Background.
  assert not features[num_objects + 1:].any() and not positions[0].any()
  np.testing.assert_allclose(features[1:num_objects + 1, 6:9], scene["colors"], rtol=1e-6)
  camera = example["cameras"]["camera_0"]
  # The eval's target id is the stored instance id - 1; each object's rays pass
  # within its bounding sphere of its oracle point.
  eval_ids = camera["instance_image"][..., 0].astype(int) - 1
  rotation = camera["extrinsics"]["R"].T * np.array([1.0, -1.0, 1.0])
  position = -camera["extrinsics"]["R"].T @ camera["extrinsics"]["t"]
  _, directions = shapes_multiview.pinhole_rays(position, rotation, 16, 16, config.fov_deg)
  for obj in range(1, num_objects + 1):
    rays = directions[eval_ids == obj]
    offset = positions[obj] - position
    across = offset - (rays @ offset)[:, None] * rays
    assert np.all(np.linalg.norm(across, axis=-1) <= np.sqrt(3.0) * features[obj, 5] + 1e-4)
  with pytest.raises(ValueError, match="model.num_slots=3"):
    oracle_slots.object_slots(scene, num_slots=3)


def test_oracle_decoder_trains_on_the_true_objects(multiview_data_dir):
  config = tiny_config(multiview_data_dir, num_train_steps=12, eval_every_steps=12,
                       log_loss_every_steps=4, learning_rate=3e-3)
  losses = []
  evaluations = oracle_slots.train_and_evaluate(
      config, lambda step, scalars: losses.append(scalars["loss"]) if "loss" in scalars else None)
  assert [step for step, _ in evaluations] == [12] and len(losses) == 3
  assert losses[-1] < losses[0]
  scalars = evaluations[0][1]
  assert set(scalars) == {"psnr", "ari", "fg_ari", "fg_miou"} and 5.0 < scalars["psnr"] < 60.0
  with pytest.raises(ConfigError, match="shapes_multiview"):
    oracle_slots.build(config_files.load_config(MSN_CONFIG))


def test_config_variants_swap_the_decoder_and_view_setup():
  config = config_files.load_config(f"{CONFIG}:slot_mixer,single_view")
  assert config.model.decoder.name == "SlotMixer" and config.data.num_input_views == 1
  assert config.data.preprocess_eval == ["multiview_eval(1, targets='inputs')"]
  assert config_files.load_config(CONFIG).model.decoder.name == "RayBroadcast"
  with pytest.raises(ValueError, match="Unknown variant.*slot_mixer, single_view"):
    config_files.load_config(f"{CONFIG}:mixer")


@pytest.mark.parametrize("config, error", [
    (f"{CONFIG}:mixer", "Bad --config .*:mixer: ValueError: Unknown variant"),
    (os.path.join(training_utils.REPO, "configs", "shapes.py"), "The oracle needs a multiview config"),
])
def test_oracle_command_rejects_bad_configs_in_one_line(config, error, tmp_path):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  result = subprocess.run(
      [sys.executable, "-m", "invariant_slots.oracle", f"--config={config}",
       f"--output_dir={tmp_path}"], cwd=training_utils.REPO, capture_output=True, text=True,
      timeout=120, check=False)
  assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
  assert re.match(f"error: {error}", result.stderr)


def test_sinusoidal_encoding_shapes_and_frequencies():
  x = jnp.array([[0.1, -0.3, 0.7]] * 2)
  encoded = multiview.sinusoidal_encoding(x, num_octaves=4, start_octave=-1)
  assert encoded.shape == (2, 3 * 2 * 4)
  frequencies = np.pi * 2.0 ** np.arange(-1, 3)
  scaled = (np.asarray(x)[..., None] * frequencies).reshape(2, -1)
  np.testing.assert_allclose(encoded, np.concatenate([np.sin(scaled), np.cos(scaled)], -1),
                             atol=1e-6)
  ray = multiview.RayEncoding(origin_octaves=3, direction_octaves=2)
  assert ray(x, x).shape == (2, 3 * 2 * 3 + 3 * 2 * 2)


def test_patch_rays_are_the_mean_rays_of_each_patch():
  rng = np.random.default_rng(0)
  origins = rng.normal(size=(2, 3, 8, 8, 3)).astype(np.float32)
  directions = rng.normal(size=(2, 3, 8, 8, 3)).astype(np.float32)
  patch_origins, patch_directions = multiview.patch_rays(jnp.asarray(origins),
                                                         jnp.asarray(directions), (2, 4))
  assert patch_origins.shape == patch_directions.shape == (2, 3, 2, 4, 3)
  for i, j in [(0, 0), (1, 3), (0, 2)]:
    block = (slice(None), slice(None), slice(4 * i, 4 * i + 4), slice(2 * j, 2 * j + 2))
    np.testing.assert_allclose(patch_origins[:, :, i, j], origins[block].mean(axis=(2, 3)),
                               rtol=1e-5, atol=1e-6)
    mean = directions[block].mean(axis=(2, 3))
    np.testing.assert_allclose(patch_directions[:, :, i, j],
                               mean / np.linalg.norm(mean, axis=-1, keepdims=True), rtol=1e-4)
  with pytest.raises(ValueError, match="equal patches"):
    multiview.patch_rays(jnp.asarray(origins), jnp.asarray(directions), (3, 3))


@pytest.mark.parametrize("ray_input", multiview.RAY_INPUTS)
def test_patch_ray_input_sees_rays_only_through_each_patch_mean(ray_input):
  encoder = multiview.SRTEncoder(features=[8, 8], hidden_size=16, num_layers=1, num_heads=2,
                                 mlp_size=16, output_size=16, ray_input=ray_input,
                                 ray_encoding=multiview.RayEncoding(2, 0, 2, 0))
  rng = np.random.default_rng(1)
  images, origins, directions = (jnp.asarray(rng.uniform(size=(1, 2, 8, 8, 3)), jnp.float32)
                                 for _ in range(3))
  params = encoder.init(jax.random.PRNGKey(0), images, origins, directions)
  # Non-zero ray weights (with "patches" they start at zero), so the rays matter.
  params = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)),
                        params)
  latents = encoder.apply(params, images, origins, directions)
  # Swapping two pixels' rays inside a 4x4 patch keeps the patch mean ray; with
  # "pixels" each pixel keeps its own ray, so the latents change.
  swap = lambda a: a.at[:, :, [0, 3], [1, 2]].set(a[:, :, [3, 0], [2, 1]])
  swapped = encoder.apply(params, images, swap(origins), swap(directions))
  if ray_input == "patches":
    np.testing.assert_allclose(swapped, latents, rtol=1e-4, atol=1e-5)
  else:
    assert np.abs(swapped - latents).max() > 1e-3
  moved = encoder.apply(params, images, origins + 1.0, directions)
  assert np.abs(moved - latents).max() > 1e-3
  with pytest.raises(ConfigError, match="ray_input"):
    multiview.build_osrt(tiny_config("/unused", **{"model.encoder.ray_input": "rays"}))


@pytest.mark.parametrize("corrector", corrector_params(CORRECTORS.names))
def test_osrt_train_step_with_every_corrector(corrector):
  options = dict(name=corrector, mlp_size=32)
  if "num_iterations" in CORRECTORS.get(corrector).__dataclass_fields__:
    options["num_iterations"] = 1
  config = tiny_config("/unused", **{"model.corrector": options, "warmup_steps": 0,
                                     "model.encoder.features": []})
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  rng = np.random.default_rng(0)
  views = lambda: jnp.asarray(rng.uniform(size=(2, 2, 8, 8, 3)), jnp.float32)
  rays = lambda: jnp.asarray(rng.uniform(size=(2, 12, 3)), jnp.float32)
  batch = {"input_image": views(), "input_origins": views(), "input_directions": views(),
           "target_origins": rays(), "target_directions": rays(), "target_color": rays()}
  key = jax.random.PRNGKey(0)
  outputs, variables = model.init_with_output({"params": key, "slots": key}, batch)
  state = training.TrainState(step=jnp.asarray(0), params=variables["params"],
                             opt_state=tx.init(variables["params"]), rng=key)
  assert outputs["reconstruction"].shape == (2, 12, 3)
  assert outputs["masks"].shape == (2, 12, config.model.num_slots)
  np.testing.assert_allclose(outputs["masks"].sum(-1), 1.0, rtol=1e-5)
  new_state, train_metrics = jax.jit(training.make_train_step(model, tx, config))(state, batch)
  assert np.isfinite(float(train_metrics["loss"]))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params)
  assert any(jax.tree.leaves(changed["corrector"])) and any(jax.tree.leaves(changed["encoder"]))


@pytest.mark.slow
def test_training_and_render_command_write_their_outputs(multiview_data_dir, tmp_path):
  config_path = tmp_path / "tiny_multiview.py"
  config_path.write_text(textwrap.dedent(f"""
      from tests import test_multiview
      def get_config():
        return test_multiview.tiny_config({multiview_data_dir!r})
  """))
  workdir, frames = tmp_path / "run", tmp_path / "frames"
  result = training_utils.run_main([f"--config={config_path}", f"--workdir={workdir}"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "eval: step 2" in result.stdout and "psnr=" in result.stdout
  psnr = training_utils.read_scalars(str(workdir), "eval/psnr")
  assert set(psnr) == {2} and np.isfinite(psnr[2])
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  render = subprocess.run(
      [sys.executable, "-m", "invariant_slots.render", f"--config={config_path}",
       f"--workdir={workdir}", f"--output_dir={frames}", "--scale=2"],
      cwd=training_utils.REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert render.returncode == 0, render.stderr[-3000:]
  assert sorted(os.listdir(frames)) == ["frame_000.png", "frame_001.png", "frame_002.png",
                                        "orbit.gif"]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  assert Image.open(frames / "frame_000.png").size == (2 * 16 * 2, 16 * 2)
  assert Image.open(frames / "orbit.gif").n_frames == 3


def test_gradient_accumulation_equals_the_full_batch():
  rng = np.random.default_rng(0)
  views = lambda: jnp.asarray(rng.uniform(size=(4, 2, 8, 8, 3)), jnp.float32)
  rays = lambda: jnp.asarray(rng.uniform(size=(4, 12, 3)), jnp.float32)
  batch = {"input_image": views(), "input_origins": views(), "input_directions": views(),
           "target_origins": rays(), "target_directions": rays(), "target_color": rays()}
  updates = []
  for accum in (1, 4):
    config = tiny_config("/unused", **{"batch_size": 4, "grad_accum_steps": accum,
                                       "model.encoder.features": []})
    model = pipelines.get_pipeline(config).build_model(config)
    key = jax.random.PRNGKey(0)
    params = model.init({"params": key, "slots": key}, batch)["params"]
    tx = optax.sgd(1.0)
    state = training.TrainState(step=jnp.asarray(0), params=params, opt_state=tx.init(params),
                               rng=key)
    new_state, _ = jax.jit(training.make_train_step(model, tx, config))(state, batch)
    updates.append(jax.tree.map(lambda a, b: np.asarray(a - b), new_state.params, params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), *updates)
  assert max(np.abs(u).max() for u in jax.tree.leaves(updates[0])) > 0


def test_the_planned_train_batch_is_the_input_pipelines(msn_data_dir):
  config = config_files.load_config(MSN_CONFIG, **{**MSN_TINY, "data.data_dir": msn_data_dir})
  batch = next(iter(input_pipeline.create_datasets(config).train))
  planned = model_specs.train_batch(config)
  assert set(planned) == set(batch) - {"target_ids"}
  for key, spec in planned.items():
    assert tuple(batch[key].shape) == spec.shape, key
