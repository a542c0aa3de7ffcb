"""Tests for the video pipeline: MOVi-schema data, video ops, SAVi model and metrics."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import sklearn.metrics
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots.datasets import movi
from invariant_slots.datasets import shapes
from invariant_slots import config_files
from invariant_slots.lib import input_pipeline
from invariant_slots.lib import model_specs
from invariant_slots.datasets import ops as preprocessing
from invariant_slots.lib import training
from invariant_slots.datasets import video_ops
from invariant_slots.modules import video as video_modules
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.pipelines import video as video_pipeline
from invariant_slots.registry import ConfigError
from tests.conftest import corrector_params
from tests.training_utils import REPO, run_main

SHAPES_VIDEO = os.path.join(REPO, "configs", "shapes_video.py")
_SMALL = movi.MoviShapesConfig(name="test32", resolution=32, num_frames=24, min_objects=2,
                               max_objects=3, num_train=8, num_validation=4)


class MoviC(tfds.core.GeneratorBasedBuilder):
  """A few synthetic videos written under the real MOVi-C name and features."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="128x128")]

  def _info(self):
    return self.dataset_info_from_configs(features=movi.movi_features(24, 128, 128))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples("train", 4),
            "validation": self._generate_examples("validation", 2)}

  def _generate_examples(self, split, count):
    config = movi.MoviShapesConfig(name="c128", resolution=128, max_objects=4)
    for index in range(count):
      yield index, movi.generate_example(config, split, index)


@pytest.fixture(scope="session")
def movi_c_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("movi_c"))
  MoviC(config="128x128", data_dir=data_dir).download_and_prepare()
  return data_dir


@pytest.fixture(scope="session")
def stored_example(tmp_path_factory):
  """(generated numpy example, the same example read back through TFDS)."""
  data_dir = str(tmp_path_factory.mktemp("movi_shapes"))
  stored = next(iter(movi.load_synthetic(_SMALL, "train", data_dir).take(1)))
  index = int(stored["metadata"]["video_name"].numpy().decode().split("_")[-1])
  return movi.generate_example(_SMALL, "train", index), stored


def test_flow_and_depth_dequantize_to_the_exact_motion(stored_example):
  example, stored = stored_example
  res = _SMALL.resolution
  features = video_ops.video_from_tfds("forward_flow")(stored)
  flow = features["flow"].numpy()
  backward = video_ops.video_from_tfds("backward_flow")(stored)["flow"].numpy()
  depth = features["depth"].numpy()[..., 0]
  seg = stored["segmentations"].numpy()[..., 0]
  np.testing.assert_array_equal(seg, example["segmentations"][..., 0])
  instances = {"positions": stored["instances"]["positions"].numpy()}
  step = lambda r: (float(r[1]) - float(r[0])) / 65535  # One quantisation step.
  for k in range(len(instances["positions"])):
    centre = instances["positions"][k][:, :2]
    displacement = (centre[1:] - centre[:-1]) * res  # [T - 1, 2] pixels.
    for t in range(_SMALL.num_frames - 1):
      pixels = seg[t] == k + 1
      np.testing.assert_allclose(flow[t][pixels], np.broadcast_to(displacement[t], (
          pixels.sum(), 2)), atol=step(stored["metadata"]["forward_flow_range"]) + 1e-4)
      later = seg[t + 1] == k + 1
      np.testing.assert_allclose(backward[t + 1][later], np.broadcast_to(-displacement[t], (
          later.sum(), 2)), atol=step(stored["metadata"]["backward_flow_range"]) + 1e-4)
    object_depth = instances["positions"][k][0, 2]
    np.testing.assert_allclose(depth[seg == k + 1], object_depth,
                               atol=step(stored["metadata"]["depth_range"]) + 1e-4)
  np.testing.assert_allclose(depth[seg == 0], movi.BACKGROUND_DEPTH,
                             atol=step(stored["metadata"]["depth_range"]) + 1e-4)
  # Numpy quantisation round trip on arbitrary values.
  values = np.random.default_rng(0).normal(size=(5, 7, 2)).astype(np.float32) * 3
  quantized, value_range = movi.quantize(values)
  assert quantized.dtype == np.uint16 and value_range.dtype == np.float32
  np.testing.assert_allclose(movi.dequantize(quantized, value_range), values,
                             atol=step(value_range) / 2 + 1e-6)
  np.testing.assert_allclose(video_ops.dequantize(quantized, value_range).numpy(), values,
                             atol=step(value_range) / 2 + 1e-6)


def test_colliding_objects_stay_apart_and_keep_exact_flow():
  gap = 2
  config = movi.MoviShapesConfig(name="gap", resolution=32, min_objects=3, max_objects=3,
                                 min_size=0.1, max_size=0.15, max_speed=0.05, num_colors=6,
                                 min_gap=gap)
  palette = {tuple(c) for c in np.round(255 * shapes._quantize(  # pylint: disable=protected-access
      shapes.palette_colors(hues=config.hues))).astype(int)}
  for index in range(6):
    example = movi.generate_example(config, "train", index)
    seg = example["segmentations"][..., 0]
    flow = movi.dequantize(example["forward_flow"], example["metadata"]["forward_flow_range"])
    positions = np.stack([inst["positions"][:, :2] for inst in example["instances"]])
    for t in range(config.num_frames):
      pixels = [np.argwhere(seg[t] == k + 1) for k in range(3)]
      for k, inst in enumerate(example["instances"]):
        # Never occluded: every frame shows the object's whole rasterised area.
        area = shapes.shape_mask(inst["asset_id"], positions[k, t], inst["scale"], 0.0,
                                 32)[1].sum()
        assert len(pixels[k]) == area == inst["visibility"][t]
        if t + 1 < config.num_frames:
          np.testing.assert_allclose(flow[t][seg[t] == k + 1],
                                     np.broadcast_to((positions[k, t + 1] - positions[k, t]) * 32,
                                                     (area, 2)), atol=1e-3)
      for i in range(3):
        for j in range(i + 1, 3):  # Max-norm pixel distance between two objects > gap.
          distance = np.abs(pixels[i][:, None] - pixels[j][None]).max(-1).min()
          assert distance > gap, (index, t, i, j, distance)
    # Objects take 3 different colours of the 6 evenly spaced hues.
    colors = {tuple(c) for c in example["video"][seg > 0].astype(int)}
    assert len(colors) == 3 and colors <= palette


def test_boxes_are_densified_per_frame(stored_example):
  _, stored = stored_example
  features = video_ops.video_from_tfds()(stored)
  max_instances = 2  # Fewer than some videos hold: the extra objects are dropped.
  features = video_ops.sparse_to_dense_annotation(max_instances=max_instances)(features)
  boxes, centers = features["boxes"].numpy(), features["centers"].numpy()
  seg = stored["segmentations"].numpy()[..., 0]
  res = _SMALL.resolution
  assert boxes.shape == (_SMALL.num_frames, max_instances, 4)
  for t in range(_SMALL.num_frames):
    for k in range(max_instances):
      ys, xs = np.nonzero(seg[t] == k + 1)
      if len(ys) == 0:
        np.testing.assert_array_equal(boxes[t, k], video_ops.NO_BOX)
        np.testing.assert_array_equal(centers[t, k], video_ops.NO_BOX)
        continue
      np.testing.assert_allclose(
          boxes[t, k], [ys.min() / res, xs.min() / res, (ys.max() + 1) / res,
                        (xs.max() + 1) / res], atol=1e-6)
      np.testing.assert_allclose(centers[t, k], [(ys.mean() + 0.5) / res,
                                                 (xs.mean() + 0.5) / res], atol=1e-5)
  # Sparse boxes on frames 0 and 2 of 3; instance 1 has none.
  bboxes = tf.ragged.constant([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]], []],
                              ragged_rank=1, inner_shape=(4,))
  frames = tf.ragged.constant([[0, 2], []])
  dense = video_ops.dense_boxes(bboxes, frames, num_frames=3, max_instances=3).numpy()
  expected = np.full((3, 3, 4), video_ops.NO_BOX, np.float32)
  expected[0, 0], expected[2, 0] = [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]
  np.testing.assert_allclose(dense, expected)


@pytest.mark.parametrize("seed", [0, 3])
def test_random_resized_crop_moves_boxes_flow_and_pixels_together(stored_example, seed):
  _, stored = stored_example
  features = video_ops.sparse_to_dense_annotation(max_instances=3)(
      video_ops.video_from_tfds("forward_flow")(stored))
  original = {k: v.numpy() for k, v in features.items() if k in video_ops.FRAME_KEYS}
  out = video_ops.random_resized_crop(24, 24, min_object_covered=0.5, seed=seed)(
      dict(features))
  seg, boxes, flow = (out[k].numpy() for k in ("segmentations", "boxes", "flow"))
  assert out["video"].shape == (24, 24, 24, 3) and seg.dtype == original["segmentations"].dtype
  seg = seg[..., 0]
  checked = 0
  for t in range(24):
    for k in range(3):
      ys, xs = np.nonzero(seg[t] == k + 1)
      if len(ys) < 4:
        continue
      # The moved box holds the cropped segmentation's box (to a resampling
      # pixel), and equals it when the crop does not cut the object.
      visible = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]) / 24
      assert np.all(visible[:2] >= boxes[t, k, :2] - 1 / 24), (boxes[t, k], visible)
      assert np.all(visible[2:] <= boxes[t, k, 2:] + 1 / 24), (boxes[t, k], visible)
      if np.all((boxes[t, k] > 0) & (boxes[t, k] < 1)):
        np.testing.assert_allclose(boxes[t, k], visible, atol=1.5 / 24)
        # The box's growth is the resize factor, and the flow grows with it.
        size_before = (original["boxes"][t, k, 2:] - original["boxes"][t, k, :2]) * 32
        factor = (boxes[t, k, 2:] - boxes[t, k, :2]) * 24 / size_before
        moving = original["segmentations"][t, ..., 0] == k + 1
        displacement = original["flow"][t][moving][0]  # Constant over the object.
        np.testing.assert_allclose(np.median(flow[t][seg[t] == k + 1], axis=0),
                                   displacement * factor, rtol=0.05, atol=0.05)
        checked += 1
  assert checked > 5
  same = video_ops.random_resized_crop(32, 32, min_object_covered=1.0)(dict(features))
  for key in ("video", "boxes", "flow", "segmentations"):
    np.testing.assert_allclose(same[key].numpy(), original[key], atol=1e-5)


def test_temporal_ops_and_resize():
  video = tf.random.uniform((24, 8, 8, 3))
  flow = tf.ones((24, 8, 8, 2))
  boxes = tf.reshape(tf.range(24 * 4, dtype=tf.float32), (24, 1, 4))
  ops = preprocessing.build_ops(["temporal_random_strided_window(length=6)",
                                 "resize_small(16)"])
  out = ops({"video": video, "flow": flow, "boxes": boxes, "video_name": tf.constant("v7")})
  assert out["video"].shape == (6, 16, 16, 3)
  start = int(out["boxes"][0, 0, 0].numpy()) // 4
  np.testing.assert_array_equal(out["boxes"].numpy(), boxes.numpy()[start:start + 6])
  np.testing.assert_allclose(out["flow"].numpy(), 2.0)  # Displacements scale with size.
  padded = video_ops.temporal_crop_or_pad(length=30)({"video": video, "boxes": boxes})
  assert padded["video"].shape[0] == 30 and np.all(padded["boxes"].numpy()[24:] == -1)
  rgb = video_ops.flow_to_rgb_tensor(tf.constant([[[[0.0, 0.0]]]])).numpy()
  np.testing.assert_allclose(rgb, 1.0)  # Zero flow is white.


def test_zero_initialised_predictor_only_normalises_each_slot():
  predictor = video_modules.transformer_predictor(num_heads=2, mlp_size=8,
                                                  zero_init_residual=True)
  slots = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16)) * 3.0 + 1.0
  params = predictor.init(jax.random.PRNGKey(1), slots)
  slots_np = np.asarray(slots, np.float64)
  # Post-LN with zero residual branches: LN(LN(x)) with unit scale, zero bias.
  expected = (slots_np - slots_np.mean(-1, keepdims=True)) / np.sqrt(
      slots_np.var(-1, keepdims=True) + 1e-6)
  expected = expected / np.sqrt(expected.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(predictor.apply(params, slots), expected, atol=1e-4)
  default = video_modules.transformer_predictor(num_heads=2, mlp_size=8)
  mixed = default.apply(default.init(jax.random.PRNGKey(1), slots), slots)
  assert np.abs(np.asarray(mixed) - expected).max() > 0.1  # The default does mix slots.


def test_predictor_is_permutation_equivariant():
  predictor = video_modules.transformer_predictor(num_heads=2, mlp_size=8)
  slots = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  params = predictor.init(jax.random.PRNGKey(1), slots)
  permutation = np.array([3, 0, 4, 1, 2])
  out = predictor.apply(params, slots)
  np.testing.assert_allclose(predictor.apply(params, slots[:, permutation]),
                             out[:, permutation], atol=1e-5)
  assert not np.allclose(out, slots, atol=1e-3)


def test_video_ari_equals_sklearn_on_the_flattened_video():
  rng = np.random.default_rng(0)
  true_ids = rng.integers(0, 4, size=(3, 5, 6, 6))
  pred_ids = rng.integers(0, 5, size=(3, 5, 6, 6))
  # Example 0: a perfect per-frame segmentation whose slot ids swap at frame 3,
  # so each object is split over time: per-frame ARIs are 1, the video ARI is not.
  pred_ids[0] = true_ids[0]
  pred_ids[0, 3:] = (true_ids[0, 3:] % 3) + 1
  pred_ids[0, 3:][true_ids[0, 3:] == 0] = 0
  for foreground in (False, True):
    got = video_pipeline.video_ari(jnp.asarray(true_ids), jnp.asarray(pred_ids), 4, 5,
                                   ignore_background=foreground)
    for i in range(3):
      true, pred = true_ids[i, 1:].ravel(), pred_ids[i, 1:].ravel()
      if foreground:
        true, pred = true[true > 0], pred[true > 0]
      assert got[i] == pytest.approx(sklearn.metrics.adjusted_rand_score(true, pred), abs=1e-5)
  assert got[0] < 0.9


def _tiny_video_config(data_dir: str, corrector: str):
  """`configs/shapes_video.py` with 16x16 frames and a minimal model."""
  return config_files.load_config(SHAPES_VIDEO, **{
      "data.data_dir": data_dir, "batch_size": 2, "warmup_steps": 0,
      "data.resolution": (16, 16), "model.slot_size": 8,
      "model.encoder": {"name": "CNN", "features": [8], "strides": [2], "kernel_size": 3,
                        "mlp_size": 8},
      "model.corrector": {"name": corrector, "mlp_size": 8},
      "model.predictor": {"name": "Transformer", "num_heads": 2, "mlp_size": 8},
      "model.initializer.hidden_size": 8,
      "model.decoder": {"name": "SpatialBroadcast", "broadcast_size": (16, 16),
                        "features": [8], "strides": [1], "kernel_size": 3}})


@pytest.mark.parametrize("name", corrector_params(CORRECTORS.names))
def test_every_corrector_runs_a_video_train_step(name):
  config = _tiny_video_config("/nonexistent", name)
  pipeline = video_pipeline.VideoPipeline()
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  rng = np.random.default_rng(0)
  batch = {"video": rng.uniform(size=(2, 3, 16, 16, 3)).astype(np.float32),
           "boxes": np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (2, 3, 3, 1)),
           "centers": np.full((2, 3, 3, 2), 0.3, np.float32),
           "flow": rng.uniform(size=(2, 3, 16, 16, 3)).astype(np.float32),
           "depth": rng.uniform(size=(2, 3, 16, 16, 1)).astype(np.float32)}
  # Eager (op by op): compiled primitives are shared between the correctors,
  # which takes a fraction of compiling a train step per corrector.
  with jax.disable_jit():
    state = training.init_state(model, tx, pipeline.example_batch(config), config)
    new_state, step_metrics = training.make_train_step(model, tx, config)(state, batch)
    values = step_metrics
  assert np.isfinite(values["loss"]) and values["grad_norm"] > 0
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params)
  assert all(jax.tree.leaves(changed["recurrence"]["corrector"]))
  # The config holds the predictor back for its first steps (`config.freeze`).
  assert not any(jax.tree.leaves(changed["recurrence"]["predictor"]))


def test_bad_slot_count_and_missing_dataset_give_config_errors(tmp_path):
  config = _tiny_video_config(str(tmp_path), "SA")
  config.model.num_slots = 3
  with pytest.raises(ConfigError, match="num_slots=3"):
    video_pipeline.VideoPipeline().build_model(config)
  with pytest.raises(ConfigError, match="configs/shapes_video.py"):
    movi.movi_builder("movi_c/128x128:1.0.0", str(tmp_path / "missing"))


@pytest.mark.parametrize("options, message", [
    (dict(max_rotation_deg=10.0), "do not rotate"),
    (dict(max_size=0.45), "max_size < 0.4"),
    (dict(min_speed=0.05, max_speed=0.01), "min_speed"),
    (dict(num_colors=4, max_objects=5), "max_objects must be <= 4"),  # the scene checks
])
def test_bad_synthetic_video_options_name_the_option(options, message):
  data = ml_collections.ConfigDict({"movi_shapes": dict(resolution=32, **options)})
  with pytest.raises(ConfigError, match=message):
    movi.synthetic_config(data)


@pytest.mark.slow
def test_movi_c_config_trains_and_evaluates_on_movi_c_schema_data(tmp_path, movi_c_dir):
  overrides = {
      "data.data_dir": movi_c_dir, "batch_size": 2, "num_train_steps": 2, "warmup_steps": 1,
      "log_loss_every_steps": 1, "eval_every_steps": 2, "checkpoint_every_steps": 2,
      "num_eval_images": 1, "data.shuffle_buffer_size": 4, "model.slot_size": 16,
      "model.encoder.width": 4, "model.encoder.mlp_size": 16,
      "model.corrector.mlp_size": 16, "model.predictor.mlp_size": 16,
      "model.initializer.hidden_size": 16, "model.decoder.features": "(8, 8, 8, 8)",
  }
  flags = [f"--config={os.path.join(REPO, 'configs', 'movi_c.py')}",
           f"--workdir={tmp_path / 'work'}"] + [f"--config.{k}={v}" for k, v in overrides.items()]
  result = run_main(flags)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [l for l in result.stdout.splitlines() if l.startswith("eval: step 2")]
  assert line, result.stdout
  values = dict(part.split("=") for part in line[0].split()[3:] if "=" in part)
  for key in ("fg_ari", "fg_miou", "loss"):
    assert np.isfinite(float(values[key])), line


def test_the_planned_train_batch_is_the_input_pipelines(tmp_path):
  config = config_files.load_config(SHAPES_VIDEO, **{
      "data.data_dir": str(tmp_path), "batch_size": 2, "data.shuffle_buffer_size": 2,
      "data.movi_shapes.num_train": 2, "data.movi_shapes.num_validation": 2})
  batch = next(iter(input_pipeline.create_datasets(config).train))
  planned = model_specs.train_batch(config)
  assert set(planned) <= set(batch)
  for key, spec in planned.items():
    assert tuple(batch[key].shape) == spec.shape, key
