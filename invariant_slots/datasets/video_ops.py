"""Named preprocessing ops for MOVi-schema videos (SAVi style).

A typical training list:

    ["video_from_tfds()", "sparse_to_dense_annotation(max_instances=10)",
     "temporal_random_strided_window(length=6)", "resize_small(64)", "flow_to_rgb()",
     "transform_depth('log_plus')", "keep('video', 'boxes', 'flow', 'depth')"]

Frame-wise features (`FRAME_KEYS`) share a leading time axis `[T, ...]`.
"""

import math

import tensorflow as tf

from invariant_slots.datasets.ops import OPS, Features, Op
from invariant_slots.registry import ConfigError

FRAME_KEYS = ("video", "segmentations", "flow", "depth", "boxes", "centers")
# Box of a slot whose object is absent in a frame, as in SAVi.
NO_BOX = -1.0
_UINT16_MAX = 65535.0


def dequantize(values: tf.Tensor, value_range: tf.Tensor) -> tf.Tensor:
  """uint16 values stored over `value_range [2]` -> float32."""
  low, high = value_range[0], value_range[1]
  return low + tf.cast(values, tf.float32) / _UINT16_MAX * (high - low)


@OPS.register("video_from_tfds")
def video_from_tfds(flow: str = "backward_flow") -> Op:
  """Reads a raw MOVi example.

  Produces `video` float32 [T, H, W, 3] in [0, 1], `segmentations` int32
  [T, H, W, 1], `flow` float32 [T, H, W, 2] (the `flow` feature, (delta_row,
  delta_col) in pixels), `depth` float32 [T, H, W, 1], and the sparse boxes
  `instances_bboxes` / `instances_bbox_frames` for `sparse_to_dense_annotation`,
  and `video_name`.
  """
  if flow not in ("backward_flow", "forward_flow"):
    raise ConfigError(f"video_from_tfds(flow={flow!r}): use 'backward_flow' or 'forward_flow'.")

  def op(features: Features) -> Features:
    metadata = features["metadata"]
    return {
        "video": tf.cast(features["video"], tf.float32) / 255.0,
        "segmentations": tf.cast(features["segmentations"], tf.int32),
        "flow": dequantize(features[flow], metadata[f"{flow}_range"]),
        "depth": dequantize(features["depth"], metadata["depth_range"]),
        "instances_bboxes": features["instances"]["bboxes"],
        "instances_bbox_frames": features["instances"]["bbox_frames"],
        "video_name": features["metadata"]["video_name"],
    }

  return op


def dense_boxes(bboxes: tf.RaggedTensor, bbox_frames: tf.RaggedTensor, num_frames: int,
                max_instances: int) -> tf.Tensor:
  """Per-frame boxes `[num_frames, max_instances, 4]`; `NO_BOX` where absent.

  Args:
    bboxes: `[num_instances, (frames), 4]`, instance i's boxes.
    bbox_frames: `[num_instances, (frames)]`, the frame of each box.
  """
  instance = tf.cast(bboxes.value_rowids(), tf.int32)
  frame = tf.cast(bbox_frames.flat_values, tf.int32)
  values = tf.cast(bboxes.flat_values, tf.float32)
  keep = (instance < max_instances) & (frame < num_frames)
  indices = tf.stack([tf.boolean_mask(frame, keep), tf.boolean_mask(instance, keep)], axis=-1)
  boxes = tf.fill([num_frames, max_instances, 4], NO_BOX)
  return tf.tensor_scatter_nd_update(boxes, indices, tf.boolean_mask(values, keep))


def centers_of_mass(segmentations: tf.Tensor, max_instances: int) -> tf.Tensor:
  """Normalised (y, x) centre of mass `[T, max_instances, 2]` of ids 1..max_instances.

  `NO_BOX` where an object has no pixel in a frame.
  """
  height, width = segmentations.shape[1], segmentations.shape[2]
  masks = tf.one_hot(segmentations[..., 0], max_instances + 1)[..., 1:]  # [T, H, W, K]
  area = tf.reduce_sum(masks, axis=(1, 2))  # [T, K]
  ys = (tf.range(height, dtype=tf.float32) + 0.5) / height
  xs = (tf.range(width, dtype=tf.float32) + 0.5) / width
  y = tf.einsum("thwk,h->tk", masks, ys) / tf.maximum(area, 1.0)
  x = tf.einsum("thwk,w->tk", masks, xs) / tf.maximum(area, 1.0)
  centers = tf.stack([y, x], axis=-1)
  return tf.where(area[..., None] > 0, centers, NO_BOX)


@OPS.register("sparse_to_dense_annotation")
def sparse_to_dense_annotation(max_instances: int) -> Op:
  """Densifies the instance boxes to `boxes [T, max_instances, 4]` (ymin, xmin,
  ymax, xmax in [0, 1]; `NO_BOX` where absent) and adds `centers [T,
  max_instances, 2]` from the segmentations; objects past `max_instances` are
  dropped."""

  def op(features: Features) -> Features:
    num_frames = features["video"].shape[0]
    features["boxes"] = dense_boxes(features.pop("instances_bboxes"),
                                    features.pop("instances_bbox_frames"),
                                    num_frames, max_instances)
    features["centers"] = centers_of_mass(features["segmentations"], max_instances)
    return features

  return op


def _frame_keys(features: Features) -> list[str]:
  return [key for key in FRAME_KEYS if key in features]


@OPS.register("temporal_random_strided_window")
def temporal_random_strided_window(length: int, seed: int = 0) -> Op:
  """A pseudo-random window of `length` consecutive frames of every frame feature.

  The start is a stateless function of `video_name` and `seed` (stateful random
  ops would stop the input iterator from being checkpointed), so each video
  always gives the same window for a given seed.
  """

  def op(features: Features) -> Features:
    num_frames = features["video"].shape[0]
    if num_frames < length:
      raise ConfigError(f"temporal_random_strided_window({length}) on {num_frames} frames.")
    if "video_name" not in features:
      raise ConfigError("temporal_random_strided_window() needs video_name; "
                        "put it after video_from_tfds().")
    name_hash = tf.strings.to_hash_bucket_fast(features["video_name"], 2**31 - 1)
    start = tf.random.stateless_uniform((), [name_hash, seed], 0, num_frames - length + 1,
                                        dtype=tf.int32)
    for key in _frame_keys(features):
      features[key] = features[key][start:start + length]
    return features

  return op


@OPS.register("temporal_crop_or_pad")
def temporal_crop_or_pad(length: int) -> Op:
  """Keeps the first `length` frames, zero-padding shorter videos (boxes with
  `NO_BOX`)."""

  def op(features: Features) -> Features:
    for key in _frame_keys(features):
      value = features[key][:length]
      missing = length - value.shape[0]
      if missing > 0:
        fill = NO_BOX if key in ("boxes", "centers") else 0
        pad = tf.fill((missing,) + tuple(value.shape[1:]), tf.cast(fill, value.dtype))
        value = tf.concat([value, pad], axis=0)
      features[key] = value
    return features

  return op


def crop_coordinates(coordinates: tf.Tensor, offset: tf.Tensor, size: tf.Tensor,
                     image_size: tf.Tensor) -> tf.Tensor:
  """Normalised `[..., 2k]` (y, x, y, x, ...) coordinates of a crop of the image.

  The crop starts at pixel `offset` (y, x) and spans `size` pixels of an image
  of `image_size`; values are clipped to [0, 1]. Entries equal to `NO_BOX` are
  kept.
  """
  scale = tf.tile(tf.cast(image_size / size, tf.float32), [coordinates.shape[-1] // 2])
  shift = tf.tile(tf.cast(offset / image_size, tf.float32), [coordinates.shape[-1] // 2])
  cropped = tf.clip_by_value((coordinates - shift) * scale, 0.0, 1.0)
  return tf.where(coordinates == NO_BOX, coordinates, cropped)


@OPS.register("random_resized_crop")
def random_resized_crop(height: int, width: int, min_object_covered: float = 0.1,
                        seed: int = 0) -> Op:
  """Crops all frames of a video at one random box and resizes them to `height x width`.

  The crop is drawn as TF's `sample_distorted_bounding_box` draws it, covering
  at least `min_object_covered` of the frame (aspect ratios 3/4 to 4/3, 8% to
  100% of the area; SAVi++ trains with 0.75), as a stateless function of
  `video_name` and `seed`. `video` and `depth` are resampled bilinearly,
  `segmentations` and `flow` nearest (as in `resize_small`), the flow's pixel
  displacements scaled to the new size; boxes and centres move into the
  crop's normalised coordinates (clipped to it; a box left with no area
  becomes `NO_BOX`). Put it before `flow_to_rgb` and `transform_depth`.
  """

  def op(features: Features) -> Features:
    if "video_name" not in features:
      raise ConfigError("random_resized_crop() needs video_name; put it after "
                        "video_from_tfds().")
    image_shape = tf.shape(features["video"])[1:]
    name_hash = tf.strings.to_hash_bucket_fast(features["video_name"], 2**31 - 1)
    offset, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=tf.stack([name_hash, tf.constant(seed, tf.int64)]),
        min_object_covered=min_object_covered, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=100)
    offset, size = offset[:2], size[:2]
    crop = lambda x: tf.slice(x, tf.concat([[0], offset, [0]], 0),  # pylint: disable=g-long-lambda
                              tf.concat([[-1], size, [-1]], 0))
    new_size = (height, width)
    for key, method in (("video", "bilinear"), ("depth", "bilinear"),
                        ("segmentations", "nearest"), ("flow", "nearest")):
      if key in features:
        resized = tf.image.resize(crop(features[key]), new_size, method=method)
        features[key] = tf.cast(resized, features[key].dtype)
    if "flow" in features:
      features["flow"] *= tf.cast(tf.constant(new_size) / size, tf.float32)
    image_size = image_shape[:2]
    if "boxes" in features:
      boxes = crop_coordinates(features["boxes"], offset, size, image_size)
      empty = (boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1])
      features["boxes"] = tf.where(empty[..., None], NO_BOX, boxes)
    if "centers" in features:
      features["centers"] = crop_coordinates(features["centers"], offset, size, image_size)
    return features

  return op


@OPS.register("resize_small")
def resize_small(size: int) -> Op:
  """Resizes frames so the smaller side is `size`.

  `video` and `depth` are area/bilinear-resampled, `segmentations` nearest,
  `flow` nearest with its pixel displacements scaled to the new size. Boxes and
  centres are normalised and stay unchanged.
  """

  def op(features: Features) -> Features:
    height, width = features["video"].shape[1:3]
    scale = size / min(height, width)
    new = (int(round(height * scale)), int(round(width * scale)))
    if new == (height, width):
      return features
    method = "area" if scale < 1 else "bilinear"
    features["video"] = tf.image.resize(features["video"], new, method=method)
    if "depth" in features:
      features["depth"] = tf.image.resize(features["depth"], new, method=method)
    if "segmentations" in features:
      features["segmentations"] = tf.image.resize(features["segmentations"], new,
                                                  method="nearest")
    if "flow" in features:
      factors = tf.constant([new[0] / height, new[1] / width], tf.float32)
      features["flow"] = tf.image.resize(features["flow"], new, method="nearest") * factors
    return features

  return op


def flow_to_rgb_tensor(flow: tf.Tensor, scale: float = 50.0) -> tf.Tensor:
  """Colour-codes flow `[..., H, W, 2]` (delta_row, delta_col) as RGB in [0, 1].

  Hue is the direction, saturation the magnitude times `scale / hypot(H, W)`
  clipped to 1, value 1 (so zero flow is white).
  """
  height, width = flow.shape[-3], flow.shape[-2]
  rows, cols = flow[..., 0], flow[..., 1]
  hue = (tf.atan2(rows, cols) / math.pi + 1.0) / 2.0
  saturation = tf.clip_by_value(
      tf.sqrt(rows**2 + cols**2) * scale / math.hypot(height, width), 0.0, 1.0)
  hsv = tf.stack([tf.math.floormod(hue, 1.0), saturation, tf.ones_like(hue)], axis=-1)
  return tf.image.hsv_to_rgb(hsv)


@OPS.register("flow_to_rgb")
def flow_to_rgb(scale: float = 50.0) -> Op:
  """Replaces `flow [T, H, W, 2]` by its colour code `[T, H, W, 3]`."""

  def op(features: Features) -> Features:
    features["flow"] = flow_to_rgb_tensor(features["flow"], scale)
    return features

  return op


@OPS.register("transform_depth")
def transform_depth(transform: str = "log_plus") -> Op:
  """`log_plus`: depth -> log(1 + depth), as in SAVi++; `none` leaves it."""
  if transform not in ("log_plus", "none"):
    raise ConfigError(f"transform_depth({transform!r}): use 'log_plus' or 'none'.")

  def op(features: Features) -> Features:
    if transform == "log_plus":
      features["depth"] = tf.math.log1p(features["depth"])
    return features

  return op
