"""Tests for invariant_slots.datasets.multi_object."""

import numpy as np
import pytest
import tensorflow as tf

from invariant_slots.datasets import multi_object as mo

ALL_NAMES = sorted(mo.DATASETS)
NUM_EXAMPLES = {"clevr_with_masks": 2}  # CLEVR records are big; keep it fast.


def _read_all(ds):
  return [{k: v.numpy() for k, v in ex.items()} for ex in ds]


def _check_against(name, got, written):
  spec = mo.DATASETS[name]
  h, w = spec.image_size
  n = spec.max_objects
  assert set(got) == ({"image", "segmentations", "visibility"} |
                      {f"objects/{k}" for k in spec.factors})
  assert got["image"].dtype == np.uint8 and got["image"].shape == (h, w, 3)
  assert got["segmentations"].dtype == np.uint8
  assert got["segmentations"].shape == (h, w, 1)
  assert got["visibility"].dtype == np.float32
  assert got["visibility"].shape == (n,)

  image = written["image"]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  assert got["image"].tobytes() == image.tobytes()
  expected_seg = np.argmax(written["mask"], axis=0).astype(np.uint8)
  np.testing.assert_array_equal(got["segmentations"], expected_seg)
  np.testing.assert_array_equal(got["visibility"], written["visibility"])
  for key, feat in spec.factors.items():
    value = got[f"objects/{key}"]
    assert value.shape == feat.shape, key
    assert value.dtype == np.dtype(feat.dtype), key
    np.testing.assert_array_equal(value, written[key])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_round_trip(name, tmp_path):
  rng = np.random.default_rng(len(name))
  examples = [mo.random_example(name, rng)
              for _ in range(NUM_EXAMPLES.get(name, 3))]
  path = str(tmp_path / f"{name}.tfrecords")
  mo.write_examples(name, path, examples)
  got = _read_all(mo.load(name, path))
  assert len(got) == len(examples)
  for g, e in zip(got, examples):
    _check_against(name, g, e)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_random_example_is_consistent(name):
  spec = mo.DATASETS[name]
  ex = mo.random_example(name, np.random.default_rng(1))
  assert set(ex) == set(spec.features)
  for key, feat in spec.features.items():
    assert ex[key].shape == feat.shape, key
  mask = ex["mask"]
  assert set(np.unique(mask)) <= {0, 255}
  # Masks partition the image.
  np.testing.assert_array_equal((mask == 255).sum(axis=0), 1)
  nonempty = (mask.reshape(spec.max_objects, -1) > 0).any(axis=1)
  np.testing.assert_array_equal(ex["visibility"], nonempty.astype(np.float32))
  assert ex["visibility"][0] == 1.0 and ex["visibility"][1:].sum() >= 1


def test_glob_reads_all_files(tmp_path):
  name = "tetrominoes"
  rng = np.random.default_rng(3)
  first = [mo.random_example(name, rng) for _ in range(2)]
  second = [mo.random_example(name, rng) for _ in range(3)]
  mo.write_examples(name, str(tmp_path / "part-00000.tfrecords"), first)
  mo.write_examples(name, str(tmp_path / "part-00001.tfrecords"), second)
  got = _read_all(mo.load(name, str(tmp_path / "part-*.tfrecords")))
  assert len(got) == 5
  for g, e in zip(got, first + second):  # Files are read in sorted order.
    _check_against(name, g, e)


def _independent_record(spec, image, mask_stored, floats, byte_factors=()):
  """Builds a record by hand, the way the published files are laid out."""
  def byte_feature(arr):
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[bytes([int(v)]) for v in np.asarray(arr).ravel()]))
  feats = {"image": byte_feature(image), "mask": byte_feature(mask_stored)}
  for key in byte_factors:
    feats[key] = byte_feature(np.zeros(spec.factors[key].shape, np.uint8))
  for key, value in floats.items():
    feats[key] = tf.train.Feature(float_list=tf.train.FloatList(
        value=np.asarray(value, np.float32).ravel()))
  return tf.train.Example(
      features=tf.train.Features(feature=feats)).SerializeToString()


@pytest.mark.parametrize("name", ["tetrominoes",
                                  "multi_dsprites_colored_on_grayscale"])
def test_reads_hand_built_original_layout(name, tmp_path):
  """Checks the reader against a record written without `write_examples`."""
  spec = mo.DATASETS[name]
  h, w = spec.image_size
  n = spec.max_objects
  rng = np.random.default_rng(7)
  labels = rng.integers(0, n, size=(h, w))
  labels[0, 0] = 0
  masks = (labels[None] == np.arange(n)[:, None, None]).astype(np.uint8) * 255
  masks[:, 0, 0] = 0  # An all-zero pixel: argmax ties resolve to 0.
  masks = masks[..., None]  # [n, H, W, 1]
  stored = np.transpose(masks, (1, 2, 0, 3)) if spec.mask_entities_last else masks
  image = rng.integers(0, 256, size=spec.image_shape, dtype=np.uint8)
  floats = {k: rng.normal(size=f.shape) for k, f in spec.factors.items()}
  floats["visibility"] = np.ones(n)
  path = str(tmp_path / "hand.tfrecords")
  options = tf.io.TFRecordOptions(compression_type="GZIP")
  with tf.io.TFRecordWriter(path, options=options) as writer:
    writer.write(_independent_record(spec, image, stored, floats))
  (got,) = _read_all(mo.load(name, path, include_masks=True))
  np.testing.assert_array_equal(got["image"], image)
  np.testing.assert_array_equal(got["masks"], masks)
  np.testing.assert_array_equal(got["segmentations"][..., 0], labels)
  for key in spec.factors:
    np.testing.assert_array_equal(got[f"objects/{key}"],
                                  floats[key].astype(np.float32))


def test_feature_description_matches_original():
  desc = mo.feature_description("clevr_with_masks")
  assert desc["image"].shape == [240, 320, 3] and desc["image"].dtype == tf.string
  assert desc["mask"].shape == [11, 240, 320, 1]
  assert desc["pixel_coords"].shape == [11, 3]
  assert desc["pixel_coords"].dtype == tf.float32
  for key in ("size", "material", "shape", "color"):
    assert desc[key].shape == [11] and desc[key].dtype == tf.string
  desc = mo.feature_description("multi_dsprites_colored_on_grayscale")
  assert desc["mask"].shape == [64, 64, 6, 1]
  assert desc["color"].shape == [6, 3]
  assert mo.DATASETS["tetrominoes"].max_objects == 4
  assert mo.DATASETS["multi_dsprites_binarized"].image_shape == (64, 64, 1)
  assert mo.CLEVR_CROP == (29, 221, 64, 256)


def test_missing_file_error(tmp_path):
  path = str(tmp_path / "nope" / "clevr_with_masks_train.tfrecords")
  with pytest.raises(FileNotFoundError) as err:
    mo.load("clevr_with_masks", path)
  message = str(err.value)
  assert "\n" not in message
  assert path in message
  assert "gs://multi-object-datasets/clevr_with_masks/" in message
  assert "--config=configs/shapes.py" in message
  with pytest.raises(FileNotFoundError, match="configs/shapes.py"):
    mo.load("tetrominoes", str(tmp_path / "*.tfrecords"))


def test_unknown_name_error(tmp_path):
  for call in (lambda: mo.load("clevr", str(tmp_path / "x")),
               lambda: mo.random_example("clevr", np.random.default_rng(0)),
               lambda: mo.write_examples("clevr", str(tmp_path / "x"), [])):
    with pytest.raises(ValueError) as err:
      call()
    for valid in ALL_NAMES:
      assert valid in str(err.value)


def test_write_rejects_bad_examples(tmp_path):
  name = "tetrominoes"
  ex = mo.random_example(name, np.random.default_rng(0))
  path = str(tmp_path / "bad.tfrecords")
  with pytest.raises(ValueError, match="shape"):
    mo.write_examples(name, path, [{**ex, "image": ex["image"][:10]}])
  with pytest.raises(ValueError, match="missing"):
    mo.write_examples(name, path, [{k: v for k, v in ex.items() if k != "x"}])
  with pytest.raises(ValueError, match="unexpected"):
    mo.write_examples(name, path, [{**ex, "z": ex["x"]}])


@pytest.mark.parametrize("name", ["clevr_with_masks",
                                  "multi_dsprites_colored_on_grayscale"])
def test_written_file_parses_with_original_recipe(name, tmp_path):
  """Decodes `write_examples` output the way DeepMind's readers do."""
  spec = mo.DATASETS[name]
  ex = mo.random_example(name, np.random.default_rng(5))
  path = str(tmp_path / "orig.tfrecords")
  mo.write_examples(name, path, [ex])
  n, (h, w) = spec.max_objects, spec.image_size
  mask_shape = [h, w, n, 1] if spec.mask_entities_last else [n, h, w, 1]
  desc = {"image": tf.io.FixedLenFeature([h, w, 3], tf.string),
          "mask": tf.io.FixedLenFeature(mask_shape, tf.string),
          "visibility": tf.io.FixedLenFeature([n], tf.float32)}
  (record,) = list(tf.data.TFRecordDataset(path, compression_type="GZIP"))
  parsed = tf.io.parse_single_example(record, desc)
  decoded = {k: tf.squeeze(tf.io.decode_raw(parsed[k], tf.uint8), axis=-1)
             for k in ("image", "mask")}
  mask = decoded["mask"].numpy()
  if spec.mask_entities_last:
    mask = np.transpose(mask, (2, 0, 1, 3))
  np.testing.assert_array_equal(decoded["image"].numpy(), ex["image"])
  np.testing.assert_array_equal(mask, ex["mask"])
  np.testing.assert_array_equal(parsed["visibility"].numpy(), ex["visibility"])
