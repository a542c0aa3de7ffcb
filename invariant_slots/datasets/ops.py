"""Small named preprocessing ops, composed from strings such as `"resize(64)"`.

Each op maps one example (a dict of tensors) to another. `build_ops` turns a
list of op strings from the config into one function:

    data.preprocess = ["clevr_crop()", "resize(128)", "value_range(0, 1)"]

An op is a factory registered in `OPS` (`@OPS.register("name")`) that takes
the literal arguments of its string and returns the function of one example.
"""

from typing import Callable, Sequence

import tensorflow as tf

from invariant_slots.datasets.multi_object import CLEVR_CROP
from invariant_slots.registry import ConfigError, Registry, parse_call

Features = dict[str, tf.Tensor]
Op = Callable[[Features], Features]

OPS: Registry[Callable[..., Op]] = Registry("preprocessing op")


def parse_op(spec: str) -> Op:
  """`"name(arg, ..., key=value)"` -> op; args and values are Python literals."""
  name, args, kwargs = parse_call(spec)
  try:
    return OPS.get(name)(*args, **kwargs)
  except TypeError as e:
    raise ConfigError(f"Bad arguments in preprocessing op {spec!r}: {e}") from None


def build_ops(specs: Sequence[str]) -> Op:
  """Composes the ops named in `specs`, applied in order."""
  ops = [parse_op(spec) for spec in specs]

  def apply(features: Features) -> Features:
    for op in ops:
      features = op(dict(features))
    return features

  return apply


def _resize_image(image: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  dtype = image.dtype
  resized = tf.image.resize(tf.cast(image, tf.float32), size, method="area")
  if dtype == tf.uint8:
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
  return resized


@OPS.register("resize")
def resize(height: int, width: int | None = None) -> Op:
  """Resizes `image` (area averaging) and `segmentations` (nearest) to `[height, width]`."""
  size = (height, width or height)

  def op(features: Features) -> Features:
    features["image"] = _resize_image(features["image"], size)
    if "segmentations" in features:
      features["segmentations"] = tf.image.resize(
          features["segmentations"], size, method="nearest")
    return features

  return op


@OPS.register("crop")
def crop(top: int, left: int, height: int, width: int) -> Op:
  """Crops `image` and `segmentations` `[H, W, C]` to the given window."""

  def op(features: Features) -> Features:
    for key in ("image", "segmentations"):
      if key in features:
        features[key] = features[key][top:top + height, left:left + width]
    return features

  return op


@OPS.register("clevr_crop")
def clevr_crop() -> Op:
  """The standard CLEVR-with-masks crop: rows 29:221, columns 64:256."""
  top, bottom, left, right = CLEVR_CROP
  return crop(top, left, bottom - top, right - left)


@OPS.register("value_range")
def value_range(low: float, high: float) -> Op:
  """Maps uint8 `image` to float32 in `[low, high]`."""

  def op(features: Features) -> Features:
    image = tf.cast(features["image"], tf.float32) / 255.0
    features["image"] = low + image * (high - low)
    return features

  return op


@OPS.register("keep")
def keep(*keys: str) -> Op:
  """Drops every feature but `keys`."""

  def op(features: Features) -> Features:
    missing = [k for k in keys if k not in features]
    if missing:
      raise ConfigError(f"keep(): missing features {missing}; have {sorted(features)}.")
    return {k: features[k] for k in keys}

  return op

