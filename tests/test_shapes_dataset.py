"""Tests for the synthetic shapes dataset (invariant_slots.datasets.shapes)."""

import colorsys
import itertools
import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

from invariant_slots.datasets import shapes

_SMALL = dict(num_train=16, num_validation=8)


def _scenes(config, split="train", count=150):
  return [shapes.generate_example(config, split, i) for i in range(count)]


_CONFIGS = {
    "default32": shapes.ShapesConfig(name="t32", resolution=32),
    "rotated64": shapes.ShapesConfig(
        name="t64r", resolution=64, min_objects=3, max_objects=8,
        max_rotation_deg=180.0, max_size=0.18),
}


def _assert_arrays_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    if isinstance(a[key], dict):
      _assert_arrays_equal(a[key], b[key])
    else:
      np.testing.assert_array_equal(a[key], b[key])


def test_render_is_deterministic():
  config = _CONFIGS["default32"]
  for i in range(5):
    _assert_arrays_equal(shapes.generate_example(config, "train", i),
                         shapes.generate_example(config, "train", i))
  train = _scenes(config, "train", 10)
  validation = _scenes(config, "validation", 10)
  other_seed = _scenes(shapes.ShapesConfig(name="s1", resolution=32, seed=1),
                       "train", 10)
  for a, b, c in zip(train, validation, other_seed):
    assert not np.array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
  assert not np.array_equal(train[0]["image"], train[1]["image"])


@pytest.mark.parametrize("name", sorted(_CONFIGS))
def test_scene_invariants(name):
  config = _CONFIGS[name]
  res = config.resolution
  palette_min_dist = np.inf
  for scene in _scenes(config, count=120):
    n = int(scene["num_objects"])
    objects = scene["objects"]
    assert config.min_objects <= n <= config.max_objects
    # Shapes and dtypes.
    assert scene["image"].shape == (res, res, 3)
    assert scene["image"].dtype == np.uint8
    assert scene["segmentations"].shape == (res, res, 1)
    assert scene["segmentations"].dtype == np.uint8
    assert scene["visibility"].shape == (config.max_objects,)
    assert scene["visibility"].dtype == np.float32
    assert scene["background_color"].shape == (3,)
    assert scene["background_color"].dtype == np.float32
    assert objects["shape"].shape == (n,)
    assert objects["color"].shape == (n, 3)
    assert objects["color"].dtype == np.float32
    assert objects["position"].shape == (n, 2)
    assert objects["position"].dtype == np.float32
    assert objects["size"].shape == (n,)
    assert objects["size"].dtype == np.float32
    assert np.all((objects["shape"] >= 0) & (objects["shape"] < len(shapes.SHAPES)))
    assert np.all((objects["size"] >= config.min_size)
                  & (objects["size"] <= config.max_size))
    # Instance ids and visibility.
    seg = scene["segmentations"][..., 0]
    ids = set(np.unique(seg).tolist())
    assert ids - {0} == set(range(1, n + 1))
    expected_vis = np.zeros(config.max_objects, np.float32)
    expected_vis[:n] = 1.0
    np.testing.assert_array_equal(scene["visibility"], expected_vis)
    # Colours: exact object and background pixels.
    image = scene["image"]
    bg = np.round(scene["background_color"] * 255).astype(np.uint8)
    assert np.all(image[seg == 0] == bg)
    for i in range(n):
      color = np.round(objects["color"][i] * 255).astype(np.uint8)
      assert np.all(image[seg == i + 1] == color)
    # Distinct, well-separated colours; contrast with the background.
    for a, b in itertools.combinations(objects["color"], 2):
      palette_min_dist = min(palette_min_dist, np.linalg.norm(a - b))
    for color in objects["color"]:
      assert np.linalg.norm(color - scene["background_color"]) > 0.5
    # Visible part lies inside the full mask rebuilt from the factors and is
    # large enough; the full shape lies inside the image.
    for i in range(n):
      window, mask = shapes.shape_mask(
          int(objects["shape"][i]), objects["position"][i],
          float(objects["size"][i]), float(objects["rotation"][i]), res)
      full = np.zeros((res, res), bool)
      r0, r1, c0, c1 = window
      full[r0:r1, c0:c1] = mask
      visible = seg == i + 1
      assert not np.any(visible & ~full)
      assert visible.sum() >= shapes.MIN_VISIBLE_PIXELS
      assert visible.sum() >= shapes.MIN_VISIBLE_FRACTION * full.sum()
      # Topmost object is fully visible.
      if i == n - 1:
        np.testing.assert_array_equal(visible, full)
      # Rasterised on a 3x larger canvas (image in the middle, same pixel
      # centres), nothing of the shape falls outside the image.
      _, padded = shapes.shape_mask(
          int(objects["shape"][i]), (objects["position"][i] + 1.0) / 3.0,
          float(objects["size"][i]) / 3.0, float(objects["rotation"][i]),
          3 * res)
      assert abs(int(padded.sum()) - int(full.sum())) <= 2
  assert palette_min_dist > 0.3


def test_palette_contrasts_with_all_backgrounds():
  for value in (0.9, 1.0):
    for color in shapes.palette_colors(value):
      for bg in shapes.BACKGROUND_COLORS:
        assert np.linalg.norm(color - np.asarray(bg)) > 0.5


def test_circle_area_matches_closed_form():
  # Direct rasterisation.
  res = 128
  for radius in (0.1, 0.15, 0.2):
    _, mask = shapes.shape_mask("circle", (0.5, 0.5), radius, 0.0, res)
    expected = math.pi * (radius * res) ** 2
    assert abs(mask.sum() - expected) / expected < 0.03
  # Unoccluded single-object scenes.
  config = shapes.ShapesConfig(name="one", resolution=res, min_objects=1,
                               max_objects=1)
  found = 0
  for i in range(60):
    scene = shapes.generate_example(config, "train", i)
    if shapes.SHAPES[scene["objects"]["shape"][0]] != "circle":
      continue
    found += 1
    radius = scene["objects"]["size"][0] * res
    area = (scene["segmentations"] == 1).sum()
    assert abs(area - math.pi * radius ** 2) / (math.pi * radius ** 2) < 0.03
    # The centre of mass is the circle centre.
    ys, xs = np.nonzero(scene["segmentations"][..., 0])
    np.testing.assert_allclose(
        [(ys.mean() + 0.5) / res, (xs.mean() + 0.5) / res],
        scene["objects"]["position"][0], atol=0.5 / res)
  assert found >= 3


@pytest.mark.parametrize("gap", [0, 1, 2])
def test_min_gap_keeps_objects_apart(gap):
  config = shapes.ShapesConfig(name="gap", resolution=32, min_objects=3,
                               max_objects=3, min_size=0.12, max_size=0.22,
                               min_gap=gap)
  for scene in _scenes(config, count=60):
    seg = scene["segmentations"][..., 0].astype(np.int32)
    ids = range(1, int(scene["num_objects"]) + 1)
    # No occlusion: every object shows its whole rasterised shape.
    for i, obj_id in enumerate(ids):
      _, mask = shapes.shape_mask(scene["objects"]["shape"][i],
                                  scene["objects"]["position"][i],
                                  scene["objects"]["size"][i],
                                  scene["objects"]["rotation"][i], 32)
      assert (seg == obj_id).sum() == mask.sum()
    # Max-norm distance between pixels of different objects exceeds `gap`.
    for a, b in itertools.combinations(ids, 2):
      pa, pb = np.argwhere(seg == a), np.argwhere(seg == b)
      dist = np.abs(pa[:, None] - pb[None]).max(-1).min()
      assert dist > gap


def test_num_colors_spaces_hues_evenly():
  config = shapes.ShapesConfig(name="hues", resolution=32, min_objects=3,
                               max_objects=3, num_colors=6)
  np.testing.assert_allclose(config.hues, [0, 60, 120, 180, 240, 300])
  seen = set()
  for scene in _scenes(config, count=60):
    hues = [round(colorsys.rgb_to_hsv(*c)[0] * 360) % 360
            for c in scene["objects"]["color"]]
    assert len(set(hues)) == len(hues)  # Distinct within a scene.
    seen.update(hues)
  # Only the 6 hues occur (up to uint8 rounding of the colour).
  assert len(seen) == 6
  assert all(min(abs(h - t) for t in (0, 60, 120, 180, 240, 300, 360)) <= 1
             for h in seen)


def test_config_validation():
  with pytest.raises(ValueError):
    shapes.ShapesConfig(name="bad", min_objects=3, max_objects=2)
  with pytest.raises(ValueError):
    shapes.ShapesConfig(name="bad", max_objects=len(shapes.PALETTE_HUES) + 1)
  with pytest.raises(ValueError):
    shapes.ShapesConfig(name="bad", max_size=0.6)
  with pytest.raises(ValueError):
    shapes.ShapesConfig(name="bad", num_colors=1)
  with pytest.raises(ValueError):
    shapes.ShapesConfig(name="bad", num_colors=4, max_objects=5)
  with pytest.raises(ValueError):
    shapes.ShapesConfig(name="bad", min_gap=-2)


def test_predefined_configs():
  configs = shapes.builder_configs()
  assert set(configs) == {"32x32", "64x64", "128x128"}
  for name, config in configs.items():
    assert name == f"{config.resolution}x{config.resolution}"
    assert (config.min_objects, config.max_objects) == (2, 6)
    assert (config.num_train, config.num_validation) == (20000, 500)
  assert shapes.Shapes.DEFAULT_CONFIG_NAME == "64x64"
  assert shapes.Shapes.name == "shapes"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  config = shapes.ShapesConfig(name="custom", resolution=32, min_objects=2,
                               max_objects=4, **_SMALL)
  builder = shapes.Shapes(config=config, data_dir=data_dir)
  builder.download_and_prepare()
  return config, builder, data_dir


def test_builder_features_and_splits(prepared):
  config, builder, _ = prepared
  assert builder.info.splits["train"].num_examples == 16
  assert builder.info.splits["validation"].num_examples == 8
  assert builder.info.features["objects"]["shape"].names == list(shapes.SHAPES)
  for ex in tfds.as_numpy(builder.as_dataset(split="train")):
    n = int(ex["num_objects"])
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert ex["segmentations"].shape == (32, 32, 1)
    assert ex["segmentations"].dtype == np.uint8
    assert ex["visibility"].shape == (4,)
    assert ex["visibility"].dtype == np.float32
    assert ex["num_objects"].dtype == np.int32
    assert ex["background_color"].shape == (3,)
    assert config.min_objects <= n <= config.max_objects
    assert ex["objects"]["shape"].shape == (n,)
    assert ex["objects"]["color"].shape == (n, 3)
    assert ex["objects"]["position"].shape == (n, 2)
    assert ex["objects"]["size"].shape == (n,)
    assert ex["visibility"].sum() == n


def test_builder_matches_generator(prepared):
  config, builder, _ = prepared
  for split, count in (("train", 16), ("validation", 8)):
    stored = {ex["image"].tobytes(): ex for ex in
              tfds.as_numpy(builder.as_dataset(split=split))}
    assert len(stored) == count
    for i in range(count):
      expected = shapes.generate_example(config, split, i)
      ex = stored[expected["image"].tobytes()]
      np.testing.assert_array_equal(ex["segmentations"],
                                    expected["segmentations"])
      np.testing.assert_array_equal(ex["objects"]["color"],
                                    expected["objects"]["color"])
      np.testing.assert_array_equal(ex["objects"]["shape"],
                                    expected["objects"]["shape"])
  train = {ex["image"].tobytes()
           for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
  validation = {ex["image"].tobytes()
                for ex in tfds.as_numpy(builder.as_dataset(split="validation"))}
  assert not train & validation


def test_load_generates_once(tmp_path, capsys):
  config = shapes.ShapesConfig(name="tiny", resolution=32, num_train=4,
                               num_validation=2)
  ds = shapes.load(config, "validation", data_dir=tmp_path)
  assert "Generating the synthetic shapes dataset (6 examples)" in (
      capsys.readouterr().out)
  assert len(list(ds)) == 2
  ds = shapes.load(config, "train", data_dir=tmp_path)
  assert "Generating" not in capsys.readouterr().out
  assert len(list(ds)) == 4
