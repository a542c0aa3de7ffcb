"""Multi-view data sources in the MultiShapeNet-Hard layout, and their preprocessing.

Two `DATA_SOURCES`, both stored in the published MultiShapeNet-Hard layout
(the `frames_spec` of google-research/sunds): one example per scene with
`scene_name`, `frame_name`, the frame `pose {R, t}` and `cameras/camera_0` ...
`camera_{V-1}`, each with `intrinsics` (`K` 3x3 in pixels, `image_width`,
`image_height`, `type`, `distortion`), `extrinsics {R, t}` (frame to camera,
OpenCV axes: x right, y down, z forward), a `color_image` PNG and labelled
`instance_image` (1 = background) and `category_image` PNGs, and `depth_image`.
No rays are stored.

* `multi_shapenet`: MultiShapeNet-Hard, the TFDS builder `kubric_frames`,
  config `multi_shapenet_conditional`, version 2.8.0, splits train, val and
  test, read with `tfds.builder_from_directory` from TFDS's
  `data.data_dir/kubric_frames/multi_shapenet_conditional/2.8.0` (published
  under gs://kubric-public/tfds, which also works as `data.data_dir`).
* `shapes_multiview`: the embedded ray-traced dataset of
  `invariant_slots.datasets.shapes_multiview`, generated on first use.

`stack_cameras` turns each stored example into `color_image [V, H, W, 3]`
uint8, `ray_origins`, `ray_directions [V, H, W, 3]` float32, `instance_image
[V, H, W, 1]` and `scene_name`, deriving each pixel's ray from its camera (as
sunds' `Nerf` task does). Training splits repeat forever and carry a running
`sample_index`, so the random view order and target rays of the preprocessing
ops differ on every pass yet are reproducible.

Preprocessing ops (`config.data.preprocess_train` / `preprocess_eval`):

* `multiview_train(num_input_views, num_target_rays, seed)`: shuffles the
  views, keeps the first `num_input_views` as inputs and draws
  `num_target_rays` rays without replacement from the other views.
* `multiview_eval(num_input_views)`: the first views are inputs; every pixel of
  the remaining views is a target ray, in view-major, row-major order, with
  its ground-truth `target_ids` (0 = background).

Both take `targets="held_out"` (the default, novel views) or `"inputs"`: the
target rays come from the input views themselves, a diagnostic that turns
the task into reconstructing the views the model sees (with one input view,
the single-image task).
"""

import os

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots.datasets import local_builder
from invariant_slots.datasets import shapes_multiview
from invariant_slots.datasets.ops import OPS, Op
from invariant_slots.datasets.sources import DATA_SOURCES
from invariant_slots.registry import ConfigError

MSN_BUCKET = "gs://kubric-public/tfds"
MSN_BUILDER = "kubric_frames"
MSN_CONFIG = "multi_shapenet_conditional"
MSN_VERSION = "2.8.0"
FEATURES = ("color_image", "ray_origins", "ray_directions", "instance_image")


def msn_directory(data_dir: str) -> str:
  """TFDS's `data_dir/kubric_frames/multi_shapenet_conditional/2.8.0`."""
  return os.path.join(os.path.expanduser(data_dir), MSN_BUILDER, MSN_CONFIG, MSN_VERSION)


def msn_builder(data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared MultiShapeNet-Hard builder; `ConfigError` if it is missing."""
  directory = msn_directory(data_dir or "~/tensorflow_datasets")
  if not tf.io.gfile.exists(os.path.join(directory, "dataset_info.json")):
    raise ConfigError(
        f"MultiShapeNet-Hard not found in {directory}: copy "
        f"{msn_directory(MSN_BUCKET)} there (or set data.data_dir={MSN_BUCKET}); "
        "without it, train on configs/shapes_multiview.py.")
  return tfds.builder_from_directory(directory)


def camera_rays(camera: dict[str, tf.Tensor], pose: dict[str, tf.Tensor], height: int,
                width: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Rays through the pixel centres of one stored pinhole camera, in the scene frame.

  Pixel (i, j) (row i from the top) is the point `(j + 0.5, i + 0.5)` of the
  pixel frame of `K`; `K^-1 (j + 0.5, i + 0.5, 1)` is its direction in the
  camera frame. The camera-to-scene transform is `pose` after the inverse of
  the extrinsics (camera rotation `R^T`, centre `-R^T t`).

  Args:
    camera: Stored camera with `intrinsics/K [3, 3]` and `extrinsics/{R [3, 3], t [3]}`.
    pose: Frame-to-scene transform `{R [3, 3], t [3]}`.
    height, width: Image size.

  Returns:
    origins (the camera centre), unit directions: float32 `[height, width, 3]`.
  """
  columns, rows = tf.meshgrid(tf.range(width, dtype=tf.float32) + 0.5,
                              tf.range(height, dtype=tf.float32) + 0.5)
  pixels = tf.stack([columns, rows, tf.ones_like(columns)], axis=-1)
  local = tf.einsum("ij,hwj->hwi", tf.linalg.inv(camera["intrinsics"]["K"]), pixels)
  rotation, translation = camera["extrinsics"]["R"], camera["extrinsics"]["t"]
  to_scene = pose["R"] @ tf.transpose(rotation)
  centre = pose["t"] - tf.linalg.matvec(to_scene, translation)
  directions = tf.math.l2_normalize(tf.einsum("ij,hwj->hwi", to_scene, local), axis=-1)
  return tf.broadcast_to(centre, tf.shape(directions)), directions


def _camera_index(name: str) -> int:
  return int(name.rsplit("_", 1)[1])


def stack_cameras(example: dict) -> dict[str, tf.Tensor]:
  """The cameras `camera_0 ...` of a stored example as `[V, H, W, C]` images and rays."""
  names = sorted(example["cameras"], key=_camera_index)
  views = {key: [] for key in FEATURES}
  for name in names:
    camera = example["cameras"][name]
    tf.debugging.assert_equal(camera["intrinsics"]["type"], "PERSPECTIVE",
                              message=f"{name} is not a pinhole camera")
    height, width = camera["color_image"].shape[:2]
    origins, directions = camera_rays(camera, example["pose"], height, width)
    views["color_image"].append(camera["color_image"])
    views["instance_image"].append(camera["instance_image"])
    views["ray_origins"].append(origins)
    views["ray_directions"].append(directions)
  return {**{key: tf.stack(value) for key, value in views.items()},
          "scene_name": example["scene_name"]}


def _decoders(builder: tfds.core.DatasetBuilder) -> tfds.decode.PartialDecoding:
  """Decodes only what `stack_cameras` reads (not the depth and category images)."""
  camera = {"intrinsics": {"K": True, "type": True}, "extrinsics": True,
            "color_image": True, "instance_image": True}
  return tfds.decode.PartialDecoding({
      "scene_name": True, "pose": True,
      "cameras": {name: camera for name in builder.info.features["cameras"].keys()}})


def _numbered(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Repeats forever and adds the running `sample_index` (int64 []) of each example."""
  return dataset.repeat().enumerate().map(
      lambda index, example: {**example, "sample_index": index})


def _split(data: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, train: bool,
           num_shards: int, shard: int) -> tuple[tf.data.Dataset, int]:
  name = data.train_split if train else data.eval_split
  if name not in builder.info.splits:
    raise ConfigError(f"data.{'train' if train else 'eval'}_split={name!r} is not a split of "
                      f"{builder.name}; it has {sorted(builder.info.splits)}.")
  size = builder.info.splits[name].num_examples
  if not train and data.get("num_eval_examples"):
    size = min(size, data.num_eval_examples)
    name = f"{name}[:{size}]"
  dataset = builder.as_dataset(split=tfds.even_splits(name, n=num_shards)[shard],
                               decoders=_decoders(builder))
  dataset = dataset.map(stack_cameras, num_parallel_calls=tf.data.AUTOTUNE)
  return (_numbered(dataset) if train else dataset), size


@DATA_SOURCES.register("multi_shapenet")
def load_multi_shapenet(data: ml_collections.ConfigDict, train: bool, num_shards: int,
                        shard: int) -> tuple[tf.data.Dataset, int]:
  """Shard `shard` of `num_shards` of MultiShapeNet-Hard's train or eval split."""
  return _split(data, msn_builder(data.data_dir), train, num_shards, shard)


@DATA_SOURCES.register("shapes_multiview")
def load_shapes_multiview(data: ml_collections.ConfigDict, train: bool, num_shards: int,
                          shard: int) -> tuple[tf.data.Dataset, int]:
  """Shard `shard` of `num_shards` of the synthetic dataset, generated on first use."""
  options = dict(data.shapes_multiview)
  config = shapes_multiview.ShapesMultiviewConfig(name=local_builder.config_name(options),
                                                  **options)
  builder = local_builder.prepared(
      shapes_multiview.ShapesMultiview(config=config, data_dir=data.data_dir),
      "multi-view scenes")
  return _split(data, builder, train, num_shards, shard)


TARGETS = ("held_out", "inputs")


def _views(features: dict[str, tf.Tensor], order: tf.Tensor, num_input_views: int,
           targets_from: str) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
  """Input-view features `[Vi, H, W, C]` and flattened target-view ones `[Vt*H*W, C]`.

  The target views are the others (`targets_from="held_out"`) or the inputs.
  """
  inputs, targets = {}, {}
  for key in FEATURES:
    value = tf.gather(features[key], order)
    inputs[key] = value[:num_input_views]
    target_views = value[num_input_views:] if targets_from == "held_out" else inputs[key]
    targets[key] = tf.reshape(target_views, (-1, value.shape[-1]))
  return inputs, targets


def _model_features(inputs: dict[str, tf.Tensor], targets: dict[str, tf.Tensor]
                    ) -> dict[str, tf.Tensor]:
  return {
      "input_image": tf.cast(inputs["color_image"], tf.float32) / 255.0,
      "input_origins": tf.cast(inputs["ray_origins"], tf.float32),
      "input_directions": tf.cast(inputs["ray_directions"], tf.float32),
      "target_origins": tf.cast(targets["ray_origins"], tf.float32),
      "target_directions": tf.cast(targets["ray_directions"], tf.float32),
      "target_color": tf.cast(targets["color_image"], tf.float32) / 255.0,
  }


def _check_targets(targets: str) -> None:
  if targets not in TARGETS:
    raise ConfigError(f"targets={targets!r} is unknown; use one of {', '.join(TARGETS)}.")


def _check_views(features: dict[str, tf.Tensor], num_input_views: int) -> int:
  num_views = features["color_image"].shape[0]
  if not 0 < num_input_views < num_views:
    raise ConfigError(f"num_input_views={num_input_views} must lie in [1, {num_views - 1}] "
                      f"for scenes of {num_views} views.")
  return num_views


@OPS.register("multiview_train")
def multiview_train(num_input_views: int, num_target_rays: int, seed: int,
                    targets: str = "held_out") -> Op:
  """Random input views and `num_target_rays` random rays of the other views."""
  _check_targets(targets)

  def op(features):
    num_views = _check_views(features, num_input_views)
    if "sample_index" not in features:
      raise ConfigError("multiview_train() needs a training split with `sample_index`.")
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(features["sample_index"], tf.int64)])
    view_key, ray_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    order = tf.argsort(tf.random.stateless_uniform([num_views], view_key))
    inputs, target_views = _views(features, order, num_input_views, targets)
    num_rays = target_views["color_image"].shape[0]
    if num_target_rays > num_rays:
      raise ConfigError(f"num_target_rays={num_target_rays} exceeds the {num_rays} pixels "
                        "of the target views.")
    rays = tf.argsort(tf.random.stateless_uniform([num_rays], ray_key))[:num_target_rays]
    return _model_features(inputs, {k: tf.gather(v, rays) for k, v in target_views.items()})

  return op


@OPS.register("multiview_eval")
def multiview_eval(num_input_views: int, targets: str = "held_out") -> Op:
  """The first views as inputs, every pixel of the others as targets, with ids."""
  _check_targets(targets)

  def op(features):
    num_views = _check_views(features, num_input_views)
    inputs, target_views = _views(features, tf.range(num_views), num_input_views, targets)
    ids = tf.maximum(tf.cast(target_views["instance_image"][:, 0], tf.int32) - 1, 0)
    return {**_model_features(inputs, target_views), "target_ids": ids}

  return op
