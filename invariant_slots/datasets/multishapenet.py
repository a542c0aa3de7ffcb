"""Multi-view data sources in the MultiShapeNet-Hard schema, and their preprocessing.

Two `DATA_SOURCES`:

* `multi_shapenet`: MultiShapeNet-Hard (`multi_shapenet_conditional`, version
  2.8.0, as published under gs://kubric-public/tfds/kubric-frames/), read
  straight from its TFDS directory `data.data_dir/multi_shapenet_conditional/2.8.0`
  with `tfds.builder_from_directory` (no `sunds` needed).
* `shapes_multiview`: the embedded ray-traced dataset of
  `invariant_slots.datasets.shapes_multiview`, generated on first use.

Both give per-scene examples with `color_image [V, H, W, 3]` uint8,
`ray_origins`, `ray_directions [V, H, W, 3]` float32, `instance_image
[V, H, W, 1]` (1 = background) and `scene_name`. Training splits repeat forever
and carry a running `sample_index`, so the random view order and target rays
of the preprocessing ops differ on every pass yet are reproducible.

Preprocessing ops (`config.data.preprocess_train` / `preprocess_eval`):

* `multiview_train(num_input_views, num_target_rays, seed)`: shuffles the
  views, keeps the first `num_input_views` as inputs and draws
  `num_target_rays` rays without replacement from the other views.
* `multiview_eval(num_input_views)`: the first views are inputs; every pixel of
  the remaining views is a target ray, in view-major, row-major order, with
  its ground-truth `target_ids` (0 = background).
"""

import os

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots.datasets import shapes_multiview
from invariant_slots.lib import input_pipeline
from invariant_slots.lib import preprocessing
from invariant_slots.registry import ConfigError

MSN_NAME = "multi_shapenet_conditional"
MSN_VERSION = "2.8.0"
FEATURES = ("color_image", "ray_origins", "ray_directions", "instance_image")


def msn_directory(data_dir: str) -> str:
  """Where the MultiShapeNet-Hard TFDS files live under `data_dir`."""
  return os.path.join(os.path.expanduser(data_dir), MSN_NAME, MSN_VERSION)


def msn_builder(data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared MultiShapeNet-Hard builder; `ConfigError` if it is missing."""
  directory = msn_directory(data_dir or "~/tensorflow_datasets")
  if not tf.io.gfile.exists(os.path.join(directory, "dataset_info.json")):
    raise ConfigError(
        f"MultiShapeNet-Hard not found in {directory} (copy "
        f"gs://kubric-public/tfds/kubric-frames/{MSN_NAME}/{MSN_VERSION} there and set "
        "data.data_dir); without it, train on configs/shapes_multiview.py.")
  return tfds.builder_from_directory(directory)


def _numbered(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Repeats forever and adds the running `sample_index` (int64 []) of each example."""
  return dataset.repeat().enumerate().map(
      lambda index, example: {**example, "sample_index": index})


def _select(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {key: example[key] for key in FEATURES}


def _split(data: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, train: bool,
           num_shards: int, shard: int) -> tuple[tf.data.Dataset, int]:
  name = data.train_split if train else data.eval_split
  size = builder.info.splits[name].num_examples
  if not train and data.get("num_eval_examples"):
    size = min(size, data.num_eval_examples)
    name = f"{name}[:{size}]"
  dataset = builder.as_dataset(split=tfds.even_splits(name, n=num_shards)[shard])
  dataset = dataset.map(_select)
  return (_numbered(dataset) if train else dataset), size


@input_pipeline.DATA_SOURCES.register("multi_shapenet")
def load_multi_shapenet(data: ml_collections.ConfigDict, train: bool, num_shards: int,
                        shard: int) -> tuple[tf.data.Dataset, int]:
  """Shard `shard` of `num_shards` of MultiShapeNet-Hard's train or eval split."""
  return _split(data, msn_builder(data.data_dir), train, num_shards, shard)


@input_pipeline.DATA_SOURCES.register("shapes_multiview")
def load_shapes_multiview(data: ml_collections.ConfigDict, train: bool, num_shards: int,
                          shard: int) -> tuple[tf.data.Dataset, int]:
  """Shard `shard` of `num_shards` of the synthetic dataset, generated on first use."""
  options = dict(data.shapes_multiview)
  name = "_".join(f"{key}{value}" for key, value in sorted(options.items()))
  config = shapes_multiview.ShapesMultiviewConfig(name=name, **options)
  builder = shapes_multiview.ShapesMultiview(config=config, data_dir=data.data_dir)
  if not builder.is_prepared():
    print(f"Generating the synthetic multi-view dataset in {builder.data_dir} ...", flush=True)
    builder.download_and_prepare()
  return _split(data, builder, train, num_shards, shard)


def _views(features: dict[str, tf.Tensor], order: tf.Tensor, num_input_views: int
           ) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
  """Input-view features `[Vi, H, W, C]` and flattened target-view ones `[Vt*H*W, C]`."""
  inputs, targets = {}, {}
  for key in FEATURES:
    value = tf.gather(features[key], order)
    inputs[key] = value[:num_input_views]
    targets[key] = tf.reshape(value[num_input_views:], (-1, value.shape[-1]))
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


def _check_views(features: dict[str, tf.Tensor], num_input_views: int) -> int:
  num_views = features["color_image"].shape[0]
  if not 0 < num_input_views < num_views:
    raise ConfigError(f"num_input_views={num_input_views} must lie in [1, {num_views - 1}] "
                      f"for scenes of {num_views} views.")
  return num_views


@preprocessing.register_op("multiview_train")
def multiview_train(num_input_views: int, num_target_rays: int, seed: int
                    ) -> preprocessing.Op:
  """Random input views and `num_target_rays` random rays of the other views."""

  def op(features):
    num_views = _check_views(features, num_input_views)
    if "sample_index" not in features:
      raise ConfigError("multiview_train() needs a training split with `sample_index`.")
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(features["sample_index"], tf.int64)])
    view_key, ray_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    order = tf.argsort(tf.random.stateless_uniform([num_views], view_key))
    inputs, targets = _views(features, order, num_input_views)
    num_rays = targets["color_image"].shape[0]
    if num_target_rays > num_rays:
      raise ConfigError(f"num_target_rays={num_target_rays} exceeds the {num_rays} pixels "
                        "of the target views.")
    rays = tf.argsort(tf.random.stateless_uniform([num_rays], ray_key))[:num_target_rays]
    targets = {k: tf.gather(v, rays) for k, v in targets.items()}
    return _model_features(inputs, targets)

  return op


@preprocessing.register_op("multiview_eval")
def multiview_eval(num_input_views: int) -> preprocessing.Op:
  """The first views as inputs, every pixel of the others as targets, with ids."""

  def op(features):
    num_views = _check_views(features, num_input_views)
    inputs, targets = _views(features, tf.range(num_views), num_input_views)
    ids = tf.maximum(tf.cast(targets["instance_image"][:, 0], tf.int32) - 1, 0)
    return {**_model_features(inputs, targets), "target_ids": ids}

  return op
