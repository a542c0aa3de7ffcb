"""Tests for the dynamics analysis (`invariant_slots.analyze`) and thresholded mIoU."""

import itertools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
import pytest

from invariant_slots import analyze
from invariant_slots.lib import checkpointing
from invariant_slots import config_files
from invariant_slots.lib import metrics
from invariant_slots.lib import training
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.registry import ConfigError
from invariant_slots.pipelines import images
from tests import training_utils

CONFIG = os.path.join(training_utils.REPO, "configs", "shapes_slot_ode.py")


# ------------------------------------------------------------------ Jacobians


def test_jacobian_statistics_match_numpy_on_small_random_weights():
  rng = np.random.default_rng(0)
  num_slots, slot_size = 2, 3
  n = num_slots * slot_size
  weight = rng.normal(size=(n, n)).astype(np.float32)
  bias = rng.normal(size=(n,)).astype(np.float32)
  slots = rng.normal(size=(4, num_slots, slot_size)).astype(np.float32)

  def update(s):  # [batch, K, D] -> same: tanh(W vec(s) + b).
    flat = s.reshape(s.shape[0], -1)
    return jnp.tanh(flat @ weight.T + bias).reshape(s.shape)

  got = analyze.jacobian_statistics(analyze.jacobians(update, jnp.asarray(slots)))
  for example in range(len(slots)):
    pre = weight @ slots[example].reshape(-1) + bias
    jacobian = (1.0 - np.tanh(pre) ** 2)[:, None] * weight  # Closed form.
    eigenvalues = np.linalg.eigvals(jacobian.astype(np.float64))
    np.testing.assert_allclose(np.sort_complex(got["eigenvalues"][example]),
                               np.sort_complex(eigenvalues), atol=1e-4)
    np.testing.assert_allclose(got["trace"][example], np.trace(jacobian), rtol=1e-5, atol=1e-5)
    log_norm = np.max(np.linalg.eigvalsh(0.5 * (jacobian + jacobian.T)))
    np.testing.assert_allclose(got["log_norm"][example], log_norm, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["spectral_radius"][example], np.max(np.abs(eigenvalues)),
                               rtol=1e-5)
  # A non-normal Jacobian: the log-norm bounds the real parts from above.
  assert np.all(got["log_norm"] >= np.max(got["eigenvalues"].real, axis=-1) - 1e-6)


@pytest.mark.parametrize("name", ["SA", "TF-Inv"])
def test_corrector_dynamics_reproduce_the_corrector(name):
  rng = np.random.default_rng(1)
  slots = rng.normal(size=(2, 3, 8)).astype(np.float32)
  inputs = rng.normal(size=(2, 5, 6)).astype(np.float32)
  corrector = CORRECTORS.build(dict(name=name, num_iterations=3, mlp_size=8), slot_size=8)
  params = jax.jit(corrector.init)(jax.random.key(0, impl="rbg"), slots, inputs)["params"]
  kind, steps = analyze.corrector_dynamics(corrector, params, jnp.asarray(slots), inputs)
  assert kind == "map" and len(steps) == 3
  np.testing.assert_allclose(steps[0][0], slots)
  last_state, last_update = steps[-1]
  expected, _ = corrector.apply({"params": params}, slots, inputs)
  np.testing.assert_allclose(last_update(last_state), expected, atol=1e-5, rtol=1e-5)
  stats = analyze.step_statistics(kind, steps[:1])[0]
  np.testing.assert_allclose(stats["residual"], np.linalg.norm(
      (steps[1][0] - slots).reshape(2, -1), axis=-1), rtol=1e-5)
  assert stats["eigenvalues"].shape == (2, 24)


def test_linear_trend_matches_scipy_linregress():
  rng = np.random.default_rng(0)
  objects = rng.integers(2, 6, size=200)
  steps = 5.0 + 0.3 * objects + rng.normal(size=200)
  trend = analyze.linear_trend(objects, steps)
  reference = scipy.stats.linregress(objects, steps)
  np.testing.assert_allclose(trend["slope"], reference.slope, rtol=1e-10)
  np.testing.assert_allclose(trend["stderr"], reference.stderr, rtol=1e-10)
  assert np.isnan(analyze.linear_trend(np.full(5, 3), steps[:5])["slope"])


def test_num_objects_counts_distinct_foreground_ids():
  segmentations = np.zeros((2, 4, 4, 1), np.uint8)
  segmentations[0, 0, :2] = 3
  segmentations[0, 2] = 1
  assert analyze.num_objects(segmentations).tolist() == [2, 0]


# ------------------------------------------------------------ analyze command


def _tiny_overrides(data_dir):
  return {"data.data_dir": data_dir, "data.shapes.num_train": 16,
          "data.shapes.num_validation": 8, "data.shuffle_buffer_size": 16,
          "batch_size": 4, "model.slot_size": 16, "model.num_slots": 3,
          "model.corrector.mlp_size": 16, "model.encoder.mlp_size": 16}


def test_analyze_command_writes_json_and_plots(shapes_data_dir, tmp_path):
  overrides = _tiny_overrides(shapes_data_dir)
  config = config_files.load_config(CONFIG, **overrides)
  # A checkpoint in the trainer's format, with random weights (no compilation needed).
  pipeline = images.ImagePipeline()
  model = pipeline.build_model(config)
  abstract = jax.eval_shape(lambda: training.init_state(
      model, training.make_optimizer(config), pipeline.example_batch(config), config))
  rng = np.random.default_rng(0)
  state = jax.tree.map(
      lambda x: (0.3 * rng.normal(size=x.shape)).astype(x.dtype)  # pylint: disable=g-long-lambda
      if jnp.issubdtype(x.dtype, jnp.floating) else np.zeros(x.shape, x.dtype), abstract)
  workdir = str(tmp_path / "run")
  checkpointer = checkpointing.Checkpointer(workdir, 1)
  checkpointer.save(3, state)
  checkpointer.close()

  flags = [f"--config={CONFIG}", f"--workdir={workdir}", "--num_scenes=4",
           "--num_count_scenes=8"]
  flags += [f"--config.{k}={v}" for k, v in overrides.items()]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "invariant_slots.analyze", *flags],
                          cwd=training_utils.REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  output_dir = os.path.join(workdir, "analysis")
  for name in ("analysis.json", "dynamics.png", "eigenvalues.png", "steps.png"):
    assert os.path.getsize(os.path.join(output_dir, name)) > 0, name
  with open(os.path.join(output_dir, "analysis.json")) as f:
    report = json.load(f)
  assert report["checkpoint_step"] == 3 and report["kind"] == "field"
  assert report["num_scenes"] == 4
  assert [step["time"] for step in report["steps"]] == [0.0, 1.0, 2.0, 3.0]
  assert len(report["steps"][0]["eigenvalues_real"][0]) == 3 * 16
  assert all(np.all(np.isfinite(step["per_scene"]["log_norm"])) for step in report["steps"])
  groups = report["solver_steps_by_objects"]
  assert set(groups) <= {"2", "3", "4", "5"}
  assert sum(g["num_scenes"] for g in groups.values()) == 8
  assert all(g["mean"] >= 1 for g in groups.values())
  assert "steps by number of objects" in result.stdout
  per_scene = np.array(report["solver_steps_per_scene"])
  objects = np.array(report["num_objects_per_scene"])
  for n, group in groups.items():
    np.testing.assert_allclose(per_scene[objects == int(n)].mean(), group["mean"])
  assert "least-squares slope" in result.stdout

  with pytest.raises(ConfigError, match="No checkpoint"):
    analyze.analyze(config, str(tmp_path / "empty"), str(tmp_path / "out"))


# --------------------------------------------------- thresholded segmentation


def test_threshold_grid_default():
  grid = metrics.threshold_grid()
  assert len(grid) == 39
  np.testing.assert_allclose(grid[[0, 1, -1]], [0.0, 0.025, 0.95])
  with pytest.raises(ValueError):
    metrics.threshold_grid(0.5, 0.1, 0.1)


def test_thresholded_segmentation_marks_low_confidence_pixels_unassigned():
  rng = np.random.default_rng(2)
  probabilities = rng.dirichlet(np.ones(3), size=(2, 5, 5)).transpose(0, 3, 1, 2)
  ids = np.asarray(metrics.thresholded_segmentation(jnp.asarray(probabilities), 0.5))
  expected = np.where(probabilities.max(axis=1) >= 0.5, probabilities.argmax(axis=1), 3)
  np.testing.assert_array_equal(ids, expected)
  assert 0 < np.mean(ids == 3) < 1


def _brute_force_miou(true_ids, pred_ids, num_slots):
  """Best mean IoU over all injective object -> slot maps (unassigned = num_slots)."""
  objects = [t for t in np.unique(true_ids) if t != 0]
  best = 0.0
  for slots in itertools.permutations(range(num_slots), len(objects)):
    ious = []
    for obj, slot in zip(objects, slots):
      true_mask, pred_mask = true_ids == obj, pred_ids == slot
      ious.append(np.sum(true_mask & pred_mask) / np.sum(true_mask | pred_mask))
    best = max(best, np.mean(ious))
  return best


def test_thresholded_mean_iou_matches_brute_force_and_hungarian_at_zero():
  rng = np.random.default_rng(3)
  true_ids = rng.integers(0, 4, size=(3, 6, 6))
  probabilities = rng.dirichlet(np.ones(4) * 0.5, size=(3, 6, 6)).transpose(0, 3, 1, 2)
  pred_ids = probabilities.argmax(axis=1)
  confidence = probabilities.max(axis=1)
  thresholds = np.array([0.0, 0.5, 0.8, 1.01])
  got = metrics.thresholded_mean_iou(true_ids, pred_ids, confidence, thresholds, 4, 4)
  assert got.shape == (3, 4)
  np.testing.assert_allclose(got[:, 0], metrics.mean_iou_hungarian(true_ids, pred_ids, 4, 4),
                             rtol=1e-6)
  np.testing.assert_allclose(got[:, 3], 0.0)  # Nothing assigned.
  for i in range(3):
    for j, tau in enumerate(thresholds):
      kept = np.where(confidence[i] >= tau, pred_ids[i], 4)
      np.testing.assert_allclose(got[i, j], _brute_force_miou(true_ids[i], kept, 4),
                                 rtol=1e-5)


def test_threshold_sweep_picks_best_mean_threshold():
  thresholds = np.array([0.0, 0.5, 0.9])
  first = np.array([[0.2, 0.6, 0.1], [0.4, np.nan, 0.3]])
  second = np.array([[0.9, 0.5, 0.8], [0.0, 0.0, 0.0]])
  mask = np.array([True, False])  # The second row of `second` is padding.
  sweep = metrics.ThresholdSweep.from_model_output(first, thresholds).merge(
      metrics.ThresholdSweep.from_model_output(second, thresholds, mask=mask))
  means = np.array([(0.2 + 0.4 + 0.9) / 3, (0.6 + 0.5) / 2, (0.1 + 0.3 + 0.8) / 3])
  np.testing.assert_allclose(sweep.compute(), means.max(), rtol=1e-6)
  best = metrics.BestThreshold.from_model_output(first, thresholds).merge(
      metrics.BestThreshold.from_model_output(second, thresholds, mask=mask))
  np.testing.assert_allclose(best.compute(), thresholds[np.argmax(means)])


def test_image_eval_metrics_report_thresholded_miou_and_solver_steps():
  collection = images.image_eval_metrics(("solver_steps",))
  batch = dict(loss=np.ones(2), ari=np.ones(2), fg_ari=np.ones(2), fg_miou=np.ones(2),
               psnr=np.ones(2), mask=np.array([True, True]),
               threshold_scores=np.array([[0.5, 0.7], [0.1, 0.2]]),
               thresholds=np.array([0.0, 0.5]), solver_steps=np.array([4, 8]))
  values = collection.single_from_model_output(**batch).compute()
  assert set(values) == {"loss", "ari", "fg_ari", "fg_miou", "psnr", "fg_miou_best", "best_tau",
                         "solver_steps"}
  np.testing.assert_allclose(values["fg_miou_best"], 0.45)
  np.testing.assert_allclose(values["best_tau"], 0.5)
  np.testing.assert_allclose(values["solver_steps"], 6.0)
