"""Set-prediction targets (preprocessing ops) and the CLEVR data source with object properties.

Targets are property vectors `target [num_slots, property_size]` laid out as
`[coordinates | one-hot of each categorical attribute | presence]` and
zero-padded to the number of slots:

- `shapes_set_target(num_slots, num_colors, size_threshold)` for the embedded
  synthetic shapes dataset (data source "shapes"): position (y, x) in [0, 1],
  shape (6 classes), colour (hue class), size (small / large).
- `clevr_set_target(num_slots)` for CLEVR (data source "clevr", TFDS
  `clevr:3.1.0`): 3D coordinates mapped from [-3, 3] to [0, 1], colour (8),
  material (2), shape (3), size (2).
"""

import os

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots.datasets import shapes
from invariant_slots.datasets.ops import OPS, Features, Op
from invariant_slots.datasets.sources import DATA_SOURCES
from invariant_slots.registry import ConfigError

CLEVR_VERSION = "3.1.0"
# Class counts of TFDS clevr's object attributes, in the target's order.
CLEVR_CATEGORIES = {"color": 8, "material": 2, "shape": 3, "size": 2}


def _pad_objects(properties: tf.Tensor, num_slots: int) -> tf.Tensor:
  """`[num_objects, dim]` -> `[num_slots, dim + 1]`: presence 1 appended, zero rows added."""
  properties = properties[:num_slots]
  presence = tf.ones_like(properties[:, :1])
  properties = tf.concat([properties, presence], axis=-1)
  return tf.pad(properties, [[0, num_slots - tf.shape(properties)[0]], [0, 0]])


def _object_hues(num_colors: int) -> np.ndarray:
  """The shapes dataset's object hues in degrees (its palette or `num_colors` evenly spaced)."""
  if num_colors == 0:
    return np.asarray(shapes.PALETTE_HUES, np.float32)
  return 360.0 * np.arange(num_colors, dtype=np.float32) / num_colors


@OPS.register("shapes_set_target")
def shapes_set_target(num_slots: int, num_colors: int = 0,
                      size_threshold: float = 0.15) -> Op:
  """Shapes `objects` -> `target [num_slots, 2 + 6 + colours + 2 + 1]`.

  Position (y, x), one-hot shape, one-hot colour (nearest hue of the
  dataset's palette; `num_colors` as in its config, 0 for the default
  palette), one-hot size (half-extent below / at least `size_threshold`),
  presence.
  """
  hues = tf.constant(_object_hues(num_colors))

  def op(features: Features) -> Features:
    objects = features["objects"]
    hue = tf.image.rgb_to_hsv(objects["color"])[:, 0] * 360.0
    difference = tf.abs(hue[:, None] - hues[None])
    color = tf.argmin(tf.minimum(difference, 360.0 - difference), axis=-1)
    size = tf.cast(objects["size"] >= size_threshold, tf.int32)
    properties = tf.concat([
        objects["position"],
        tf.one_hot(objects["shape"], len(shapes.SHAPES)),
        tf.one_hot(color, len(hues)),
        tf.one_hot(size, 2),
    ], axis=-1)
    features["target"] = _pad_objects(properties, num_slots)
    return features

  return op


@OPS.register("clevr_set_target")
def clevr_set_target(num_slots: int) -> Op:
  """CLEVR `objects` -> `target [num_slots, 3 + 8 + 2 + 3 + 2 + 1]`.

  3D coordinates mapped from [-3, 3] to [0, 1], one-hot colour, material,
  shape and size, presence.
  """

  def op(features: Features) -> Features:
    objects = features["objects"]
    properties = tf.concat(
        [(objects["3d_coords"] + 3.0) / 6.0] +
        [tf.one_hot(objects[name], size) for name, size in CLEVR_CATEGORIES.items()], axis=-1)
    features["target"] = _pad_objects(properties, num_slots)
    return features

  return op


@DATA_SOURCES.register("clevr")
def _load_clevr(data: ml_collections.ConfigDict, train: bool, num_shards: int,
                shard: int) -> tuple[tf.data.Dataset, int]:
  """TFDS `clevr:3.1.0` from `data.data_dir`; scenes with more than
  `data.max_objects` objects are dropped, the eval split is cut to
  `data.num_eval_examples`."""
  data_dir = os.path.expanduser(data.data_dir) if data.data_dir else None
  builder = tfds.builder(f"clevr:{CLEVR_VERSION}", data_dir=data_dir)
  if not builder.is_prepared():
    raise ConfigError(
        f"CLEVR (TFDS clevr:{CLEVR_VERSION}) is not prepared in {builder.data_dir}; build it "
        "with `tfds build clevr --data_dir=DIR` and set data.data_dir=DIR, or use "
        "configs/shapes_set_prediction.py for the synthetic dataset.")
  split = "train" if train else "validation"
  size = builder.info.splits[split].num_examples
  if not train:
    size = min(size, data.num_eval_examples)
    split = f"validation[:{size}]"
  split = tfds.even_splits(split, n=num_shards)[shard]
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  max_objects = data.max_objects
  dataset = dataset.filter(
      lambda example: tf.shape(example["objects"]["color"])[0] <= max_objects)
  return dataset, size
