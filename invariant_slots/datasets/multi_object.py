"""Readers for DeepMind's ``multi_object_datasets`` in their original format.

The datasets (CLEVR-with-masks, Tetrominoes, Multi-dSprites) are published as
single GZIP-compressed TFRecord files at ``gs://multi-object-datasets/``, e.g.::

  gsutil cp gs://multi-object-datasets/tetrominoes/tetrominoes_train.tfrecords .

Storage format (per ``tf.train.Example``), as defined by the original readers:

* ``image`` and ``mask`` are ``bytes_list`` features holding ONE single-byte
  string per array element (a ``FixedLenFeature(shape, tf.string)`` that is
  decoded with ``tf.io.decode_raw(..., tf.uint8)`` and squeezed).
  ``mask`` values are 0 or 255; mask index 0 is the background.
* CLEVR's categorical factors (``size``, ``material``, ``shape``, ``color``) are
  stored the same way (one byte per object), i.e. they decode to uint8.
* All other factors and ``visibility`` are ``float_list`` features.
* Masks are stored as ``[max_objects, H, W, 1]`` except for Multi-dSprites,
  which stores them as ``[H, W, max_objects, 1]`` (the original reader
  transposes them to ``[max_objects, H, W, 1]``).

:func:`load` returns examples in the framework's canonical form::

  image          uint8   [H, W, 3]   (binarized Multi-dSprites: gray tiled to 3)
  segmentations  uint8   [H, W, 1]   argmax over mask index (0 = background)
  visibility     float32 [max_objects]
  objects/<f>    factor <f> in its original dtype and shape (uint8 or float32)
  masks          uint8   [max_objects, H, W, 1]   (only with include_masks=True)

To make a small local test file in the original format, use
:func:`random_example` and :func:`write_examples`::

  rng = np.random.default_rng(0)
  write_examples("tetrominoes", "/tmp/tetro.tfrecords",
                 [random_example("tetrominoes", rng) for _ in range(8)])
  ds = load("tetrominoes", "/tmp/tetro.tfrecords")
"""

from __future__ import annotations

import dataclasses
import functools
import glob as _glob
import os
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from invariant_slots.datasets.sources import DATA_SOURCES

__all__ = [
    "CLEVR_CROP",
    "DATASETS",
    "DatasetSpec",
    "FeatureSpec",
    "feature_description",
    "get_spec",
    "load",
    "random_example",
    "write_examples",
]

COMPRESSION_TYPE = "GZIP"
GCS_BUCKET = "gs://multi-object-datasets"

# CLEVR-with-masks centre crop used by Slot Attention / IODINE style pipelines:
# rows 29:221, cols 64:256 of the 240x320 image -> 192x192.
# Layout: (row_start, row_end, col_start, col_end).
CLEVR_CROP = (29, 221, 64, 256)

UINT8 = "uint8"  # bytes_list, one single-byte string per element.
FLOAT32 = "float32"  # float_list.


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """Shape and storage dtype of one stored feature ("uint8" or "float32")."""
  shape: tuple[int, ...]
  dtype: str

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Description of one dataset in the original TFRecord format.

  Attributes:
    name: dataset name (key of ``DATASETS``).
    image_size: (H, W).
    num_channels: channels of the *stored* image (1 for binarized dSprites).
    max_objects: number of masks / entity slots, background included.
    factors: per-object factor features (without ``visibility``), in the
      original names, dtypes and (decoded) shapes.
    mask_entities_last: True if masks are stored as [H, W, n, 1] instead of
      [n, H, W, 1] (Multi-dSprites).
    gcs_path: where the published file lives.
  """
  name: str
  image_size: tuple[int, int]
  num_channels: int
  max_objects: int
  factors: Mapping[str, FeatureSpec]
  mask_entities_last: bool
  gcs_path: str

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """Shape of the stored (and decoded) ``image`` feature."""
    return (*self.image_size, self.num_channels)

  @property
  def mask_shape(self) -> tuple[int, int, int, int]:
    """Shape of the decoded ``mask`` feature: [max_objects, H, W, 1]."""
    return (self.max_objects, *self.image_size, 1)

  @property
  def stored_mask_shape(self) -> tuple[int, int, int, int]:
    if self.mask_entities_last:
      return (*self.image_size, self.max_objects, 1)
    return self.mask_shape

  @property
  def features(self) -> dict[str, FeatureSpec]:
    """All stored features with their decoded shapes (mask: [n, H, W, 1])."""
    out = {
        "image": FeatureSpec(self.image_shape, UINT8),
        "mask": FeatureSpec(self.mask_shape, UINT8),
    }
    out.update(self.factors)
    out["visibility"] = FeatureSpec((self.max_objects,), FLOAT32)
    return out


def _factors(num_objects: int, dtype: str, **widths: int) -> dict[str, FeatureSpec]:
  """Per-object factors `[num_objects]` (width 0) or `[num_objects, width]` of one dtype."""
  return {name: FeatureSpec((num_objects,) + ((width,) if width else ()), dtype)
          for name, width in widths.items()}


def _clevr_spec() -> DatasetSpec:
  n = 11
  return DatasetSpec(
      name="clevr_with_masks", image_size=(240, 320), num_channels=3, max_objects=n,
      factors={**_factors(n, FLOAT32, x=0, y=0, z=0, pixel_coords=3, rotation=0),
               **_factors(n, UINT8, size=0, material=0, shape=0, color=0)},
      mask_entities_last=False,
      gcs_path=f"{GCS_BUCKET}/clevr_with_masks/clevr_with_masks_train.tfrecords")


def _tetrominoes_spec() -> DatasetSpec:
  n = 4
  return DatasetSpec(
      name="tetrominoes", image_size=(35, 35), num_channels=3, max_objects=n,
      factors=_factors(n, FLOAT32, x=0, y=0, shape=0, color=3), mask_entities_last=False,
      gcs_path=f"{GCS_BUCKET}/tetrominoes/tetrominoes_train.tfrecords")


def _multi_dsprites_spec(variant: str, n: int) -> DatasetSpec:
  channels = 1 if variant == "binarized" else 3
  name = f"multi_dsprites_{variant}"
  return DatasetSpec(
      name=name, image_size=(64, 64), num_channels=channels, max_objects=n,
      factors=_factors(n, FLOAT32, x=0, y=0, shape=0, color=channels, orientation=0, scale=0),
      mask_entities_last=True, gcs_path=f"{GCS_BUCKET}/multi_dsprites/{name}.tfrecords")


# Name -> spec. Multi-dSprites entity counts follow the original reader's
# MAX_NUM_ENTITIES_DICT (binarized: 4, colored_on_grayscale: 6,
# colored_on_colored: 5), background included.
DATASETS: dict[str, DatasetSpec] = {
    s.name: s for s in (
        _clevr_spec(),
        _tetrominoes_spec(),
        _multi_dsprites_spec("colored_on_grayscale", 6),
        _multi_dsprites_spec("colored_on_colored", 5),
        _multi_dsprites_spec("binarized", 4),
    )
}


def get_spec(name: str) -> DatasetSpec:
  """Returns the spec of dataset ``name``; ValueError listing valid names."""
  try:
    return DATASETS[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"Unknown multi-object dataset {name!r}; valid names: "
        f"{', '.join(sorted(DATASETS))}") from None


def feature_description(name: str) -> dict[str, tf.io.FixedLenFeature]:
  """The ``tf.io.parse_single_example`` description of the stored format."""
  spec = get_spec(name)
  desc = {}
  for key, feat in spec.features.items():
    shape = spec.stored_mask_shape if key == "mask" else feat.shape
    tf_dtype = tf.string if feat.dtype == UINT8 else tf.float32
    desc[key] = tf.io.FixedLenFeature(list(shape), tf_dtype)
  return desc


# ---------------------------------------------------------------------------
# Reading.


def _has_glob_magic(path: str) -> bool:
  return any(c in path for c in "*?[")


def _resolve_files(spec: DatasetSpec, path: str) -> list[str]:
  """Expands ``path`` (file or glob) into a sorted list of existing files."""
  path = os.fspath(path)
  files: list[str] = []
  if "://" in path:  # Remote filesystem (gs://, ...): let TensorFlow look.
    try:
      files = sorted(tf.io.gfile.glob(path))
    except tf.errors.NotFoundError:
      files = []
  else:
    expanded = os.path.expanduser(path)
    if _has_glob_magic(expanded):
      files = sorted(_glob.glob(expanded))
    elif os.path.exists(expanded):
      files = [expanded]
    files = [f for f in files if os.path.isfile(f)]
  if not files:
    raise FileNotFoundError(
        f"No {spec.name} TFRecord file matches {path!r}; the data is "
        f"published at {spec.gcs_path} (fetch it with gsutil cp and pass its "
        "local path), or train on the embedded synthetic data with "
        "--config=configs/shapes.py")
  return files


def _segmentation_from_masks(masks: tf.Tensor) -> tf.Tensor:
  """[n, H, W, 1] masks -> [H, W, 1] uint8 argmax over n (first index wins)."""
  masks = masks[..., 0]
  n = masks.shape[0]
  peak = tf.reduce_max(masks, axis=0, keepdims=True)
  ids = tf.reshape(tf.range(n, dtype=tf.int32), [n, 1, 1])
  first = tf.reduce_min(
      tf.where(masks == peak, ids, tf.constant(n, tf.int32)), axis=0)
  return tf.cast(first, tf.uint8)[..., None]


def _decode(record: tf.Tensor, spec: DatasetSpec,
            description: Mapping[str, tf.io.FixedLenFeature],
            include_masks: bool) -> dict[str, tf.Tensor]:
  raw = tf.io.parse_single_example(record, description)
  decoded = {}
  for key, feat in spec.features.items():
    value = raw[key]
    if feat.dtype == UINT8:
      stored_shape = description[key].shape
      value = tf.reshape(tf.io.decode_raw(value, tf.uint8), stored_shape)
    decoded[key] = value
  masks = decoded["mask"]
  if spec.mask_entities_last:
    masks = tf.transpose(masks, [2, 0, 1, 3])
  image = decoded["image"]
  if spec.num_channels == 1:
    image = tf.tile(image, [1, 1, 3])
  out = {
      "image": image,
      "segmentations": _segmentation_from_masks(masks),
      "visibility": tf.cast(decoded["visibility"], tf.float32),
  }
  for key in spec.factors:
    out[f"objects/{key}"] = decoded[key]
  if include_masks:
    out["masks"] = masks
  return out


def find_damage(name: str, path: str) -> tuple[str, int, str] | None:
  """The first unreadable record of the files matching `path`.

  Returns:
    `(file, record index, reason)`, or None if every record reads and parses.
  """
  spec = get_spec(name)
  description = feature_description(name)
  for file in _resolve_files(spec, path):
    records = iter(tf.data.TFRecordDataset(file, compression_type=COMPRESSION_TYPE))
    index = 0
    while True:
      try:
        record = next(records)
        tf.io.parse_single_example(record, description)
      except StopIteration:
        break
      except tf.errors.OpError as e:
        return file, index, f"{type(e).__name__}: {e.message.strip().splitlines()[0][:200]}"
      index += 1
  return None


def describe_damage(name: str, path: str, reason: str) -> str:
  """One line naming the damaged file and record of `path`, and where the data comes from."""
  spec = get_spec(name)
  damage = find_damage(name, path)
  if damage is None:
    where = f"{path} ({reason})"
  else:
    file, index, reason = damage
    where = f"{file}: record {index} is unreadable ({reason})"
  return (f"Damaged {spec.name} TFRecord data: {where}. The file is a GZIP TFRecord "
          f"published at {spec.gcs_path}; fetch it again with gsutil cp.")


def load(name: str,
         path: str,
         *,
         include_masks: bool = False,
         num_parallel_calls: int | None = tf.data.AUTOTUNE,
         buffer_size: int | None = None) -> tf.data.Dataset:
  """Reads a multi_object_datasets TFRecord file (or glob) in canonical form.

  Args:
    name: a key of ``DATASETS``.
    path: a single file or a glob (local or any TF filesystem such as gs://).
      Matched files are read in sorted order.
    include_masks: also return the decoded ``masks`` [max_objects, H, W, 1].
    num_parallel_calls: parallelism of the decoding map.
    buffer_size: read buffer of ``tf.data.TFRecordDataset``.

  Returns:
    An unbatched ``tf.data.Dataset`` of dicts with keys ``image`` (uint8
    [H, W, 3]), ``segmentations`` (uint8 [H, W, 1]), ``visibility`` (float32
    [max_objects]) and ``objects/<factor>`` (original dtype and shape).

  Raises:
    ValueError: unknown ``name``.
    FileNotFoundError: nothing matches ``path``.
  """
  spec = get_spec(name)
  files = _resolve_files(spec, path)
  description = feature_description(name)
  ds = tf.data.TFRecordDataset(
      files, compression_type=COMPRESSION_TYPE, buffer_size=buffer_size)
  decode = functools.partial(
      _decode, spec=spec, description=description, include_masks=include_masks)
  return ds.map(decode, num_parallel_calls=num_parallel_calls,
                deterministic=True)


# ---------------------------------------------------------------------------
# Writing (small local files in the original format, e.g. for tests).

_SINGLE_BYTES = tuple(bytes([i]) for i in range(256))


def _as_array(spec: DatasetSpec, key: str, value: Any,
              feat: FeatureSpec) -> np.ndarray:
  arr = np.asarray(value)
  if arr.shape != feat.shape:
    raise ValueError(f"{spec.name}: feature {key!r} must have shape "
                     f"{feat.shape}, got {arr.shape}")
  if feat.dtype == UINT8:
    if arr.dtype != np.uint8:
      if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or
                       arr.max() > 255 or np.any(arr != np.round(arr))):
        raise ValueError(f"{spec.name}: feature {key!r} must hold integers "
                         "in [0, 255]")
      arr = arr.astype(np.uint8)
  else:
    arr = arr.astype(np.float32)
  return arr


def _serialize(spec: DatasetSpec, example: Mapping[str, Any]) -> bytes:
  expected = spec.features
  missing = sorted(set(expected) - set(example))
  extra = sorted(set(example) - set(expected))
  if missing or extra:
    raise ValueError(f"{spec.name}: example keys must be exactly "
                     f"{sorted(expected)}; missing {missing}, unexpected {extra}")
  feature = {}
  for key, feat in expected.items():
    arr = _as_array(spec, key, example[key], feat)
    if key == "mask" and spec.mask_entities_last:
      arr = np.transpose(arr, (1, 2, 0, 3))
    if feat.dtype == UINT8:
      values = [_SINGLE_BYTES[v] for v in arr.ravel().tolist()]
      feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    else:
      feature[key] = tf.train.Feature(
          float_list=tf.train.FloatList(value=arr.ravel()))
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def write_examples(name: str, path: str,
                   examples: Sequence[Mapping[str, Any]]) -> None:
  """Writes numpy examples to a GZIP TFRecord file in the original format.

  Each example uses the original keys and decoded shapes: ``image`` uint8
  ``spec.image_shape``, ``mask`` uint8 [max_objects, H, W, 1] (0/255; for
  Multi-dSprites it is transposed to the stored [H, W, max_objects, 1]
  layout), ``visibility`` float32 [max_objects] and every factor in
  ``spec.factors``. The result can be read by :func:`load` and by DeepMind's
  original readers.
  """
  spec = get_spec(name)
  records = [_serialize(spec, ex) for ex in examples]
  options = tf.io.TFRecordOptions(compression_type=COMPRESSION_TYPE)
  with tf.io.TFRecordWriter(os.fspath(path), options=options) as writer:
    for record in records:
      writer.write(record)


def random_example(name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A random example of dataset ``name`` with a self-consistent schema.

  Objects are random axis-aligned rectangles (later ones occlude earlier
  ones); the masks partition the image (every pixel is 255 in exactly one
  mask, index 0 = background), the image colour is constant per mask,
  ``visibility[k] = 1`` iff mask k is non-empty (always 1 for the
  background) and factors of invisible objects are zero.
  """
  spec = get_spec(name)
  h, w = spec.image_size
  n = spec.max_objects
  labels = np.zeros((h, w), np.int64)
  num_objects = int(rng.integers(1, n))  # 1 .. n-1 foreground objects.
  for k in range(1, num_objects + 1):
    oh = int(rng.integers(max(1, h // 8), max(2, h // 2) + 1))
    ow = int(rng.integers(max(1, w // 8), max(2, w // 2) + 1))
    top = int(rng.integers(0, h - oh + 1))
    left = int(rng.integers(0, w - ow + 1))
    labels[top:top + oh, left:left + ow] = k
  ids = np.arange(n)
  mask = (labels[None] == ids[:, None, None]).astype(np.uint8) * 255
  mask = mask[..., None]
  visible = mask.reshape(n, -1).max(axis=1) > 0
  visible[0] = True
  visibility = visible.astype(np.float32)

  if spec.num_channels == 1:  # Binarized: white sprites on black.
    palette = np.full((n, 1), 255, np.uint8)
    palette[0] = 0
  else:
    palette = rng.integers(0, 256, size=(n, spec.num_channels), dtype=np.uint8)
  image = palette[labels]

  example = {"image": image, "mask": mask, "visibility": visibility}
  for key, feat in spec.factors.items():
    if feat.dtype == UINT8:
      value = rng.integers(1, 8, size=feat.shape, dtype=np.uint8)
    else:
      value = rng.uniform(-1.0, 1.0, size=feat.shape).astype(np.float32)
    # Null out invisible objects, broadcasting over trailing factor axes.
    value = value * visible.reshape((n,) + (1,) * (value.ndim - 1)).astype(
        value.dtype)
    example[key] = value
  if "color" in spec.factors and spec.factors["color"].dtype == FLOAT32:
    color = palette.astype(np.float32) / 255.0
    color[~visible] = 0.0
    example["color"] = color.astype(np.float32)
  return example


@DATA_SOURCES.register("multi_object")
def load_source(data: ml_collections.ConfigDict, train: bool, num_shards: int,
                shard: int) -> tuple[tf.data.Dataset, int | None]:
  """Shard `shard` of `num_shards` of the TFRecord file at `data.path`.

  The first `data.num_eval_examples` scenes (after the `data.max_objects`
  filter) are the eval split, the rest the train split, whose size is not
  known without reading the whole file (None).
  """
  dataset = load(data.name, os.path.expanduser(data.path))
  if data.get("max_objects"):  # e.g. CLEVR6: scenes with at most 6 objects.
    dataset = dataset.filter(
        lambda features: tf.reduce_sum(features["visibility"][1:]) <= data.max_objects)
  num_eval = data.num_eval_examples
  dataset = dataset.skip(num_eval) if train else dataset.take(num_eval)
  return dataset.shard(num_shards, shard), (None if train else num_eval)
