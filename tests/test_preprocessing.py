"""Preprocessing ops and op-string parsing."""

import numpy as np
import pytest
import tensorflow as tf

from invariant_slots.datasets import multi_object
from invariant_slots.datasets import ops as preprocessing
from invariant_slots.registry import ConfigError


def _example(height=240, width=320):
  rng = np.random.default_rng(0)
  return {
      "image": tf.constant(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)),
      "segmentations": tf.constant(rng.integers(0, 7, (height, width, 1), dtype=np.uint8)),
      "visibility": tf.ones([11]),
  }


def test_clevr_crop_then_resize_matches_numpy():
  example = _example()
  out = preprocessing.build_ops(["clevr_crop()", "resize(64)", "value_range(0, 1)"])(example)
  image = example["image"].numpy()[29:221, 64:256].astype(np.float32)
  # Area resize by an integer factor 3 is a 3x3 block mean.
  expected = image.reshape(64, 3, 64, 3, 3).mean(axis=(1, 3)) / 255.0
  np.testing.assert_allclose(out["image"].numpy(), np.round(expected * 255) / 255, atol=1e-6)
  segmentation = example["segmentations"].numpy()[29:221, 64:256]
  assert out["segmentations"].dtype == tf.uint8
  # Nearest neighbour keeps only existing ids, sampled on the 3-pixel grid.
  assert set(np.unique(out["segmentations"])) <= set(np.unique(segmentation))
  assert out["image"].shape == (64, 64, 3)


def test_clevr_crop_matches_the_published_window():
  top, bottom, left, right = multi_object.CLEVR_CROP
  out = preprocessing.parse_op("clevr_crop()")(_example())
  assert out["image"].shape == (bottom - top, right - left, 3) == (192, 192, 3)


def test_value_range_maps_uint8_to_the_interval():
  example = {"image": tf.constant([[[0, 255, 51]]], tf.uint8)}
  out = preprocessing.parse_op("value_range(-1, 1)")(example)
  np.testing.assert_allclose(out["image"].numpy(), [[[-1.0, 1.0, -0.6]]], atol=1e-6)


def test_keep_drops_other_features_and_names_missing_ones():
  out = preprocessing.parse_op("keep('image')")(_example(8, 8))
  assert list(out) == ["image"]
  with pytest.raises(ConfigError, match="missing features.*masks"):
    preprocessing.parse_op("keep('image', 'masks')")(_example(8, 8))


@pytest.mark.parametrize("spec, message", [
    ("resise(64)",
     "Unknown preprocessing op 'resise'; Did you mean 'resize'\\? valid names: .*resize"),
    ("resize(64", "Malformed"),
    ("resize(sixty)", "Bad arguments"),
])
def test_bad_op_strings(spec, message):
  with pytest.raises(ConfigError, match=message):
    preprocessing.parse_op(spec)
