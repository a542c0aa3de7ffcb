"""Set prediction: AP, Hungarian-matched loss, targets, CLEVR loader, a tiny training run."""

import itertools
import os

import jax
import ml_collections
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf
import tensorflow_datasets as tfds

from invariant_slots.datasets import shapes
from invariant_slots import config_files
from invariant_slots import datasets
from invariant_slots.lib import losses
from invariant_slots.lib import metrics
from invariant_slots.datasets import ops as preprocessing
from invariant_slots.datasets import set_targets
from invariant_slots.registry import ConfigError
from tests import training_utils

# Layout used by the AP tests: (y, x), one attribute with 3 classes, presence.
CATEGORIES = (3,)
SCALE = 6.0


def _objects(*rows) -> np.ndarray:
  """`(y, x, class, presence_or_confidence)` rows -> `[n, 2 + 3 + 1]` property vectors."""
  out = np.zeros((len(rows), 6), np.float32)
  for i, (y, x, cls, last) in enumerate(rows):
    out[i, :2] = (y, x)
    out[i, 2 + cls] = 1.0
    out[i, -1] = last
  return out


def _ap(prediction, target) -> dict[str, float]:
  batch = metrics.set_prediction_metrics_from_batch(
      np.zeros(len(target)), np.asarray(prediction), np.asarray(target),
      np.ones(len(target), bool), 2, CATEGORIES, SCALE)
  return {k: float(v) for k, v in batch.compute().items()}


def test_ap_perfect_predictions_score_one():
  target = np.stack([_objects((0.1, 0.2, 0, 1), (0.7, 0.3, 2, 1), (0, 0, 0, 0)),
                     _objects((0.5, 0.5, 1, 1), (0, 0, 0, 0), (0, 0, 0, 0))])
  prediction = target.copy()
  prediction[..., -1] = [[0.9, 0.8, 0.1], [0.95, 0.2, 0.05]]  # Padding rows least confident.
  ap = _ap(prediction, target)
  for key in ("ap_inf", "ap_1", "ap_0p5", "ap_0p25", "ap_0p125"):
    assert ap[key] == pytest.approx(1.0)


@pytest.mark.parametrize("wrong_rank, expected", [
    # TP TP TP FP: precision 1 up to recall 3/4.
    (3, 0.75),
    # FP TP TP TP: precisions 1/2, 2/3, 3/4 at recalls 1/4, 2/4, 3/4 -> made
    # monotone they are all 3/4, so AP = 3 * 1/4 * 3/4.
    (0, 0.5625),
])
def test_ap_one_wrong_attribute(wrong_rank, expected):
  # All objects of class 0, so the wrong class matches none of them.
  target = _objects((0.1, 0.1, 0, 1), (0.3, 0.3, 0, 1), (0.5, 0.5, 0, 1), (0.7, 0.7, 0, 1))
  prediction = target.copy()
  confidence = np.array([0.9, 0.8, 0.7, 0.6])
  prediction[:, -1] = confidence
  wrong = int(np.argsort(-confidence)[wrong_rank])
  prediction[wrong, 2:5] = np.roll(prediction[wrong, 2:5], 1)  # Another class.
  assert _ap(prediction[None], target[None])["ap_inf"] == pytest.approx(expected)


def test_ap_thresholds_filter_by_distance():
  target = _objects((0.2, 0.2, 0, 1), (0.6, 0.6, 1, 1))
  prediction = target.copy()
  prediction[:, -1] = [0.9, 0.8]
  # Second object off by 0.05 in x: distance 6 * 0.05 = 0.3 units.
  prediction[1, 1] += 0.05
  ap = _ap(prediction[None], target[None])
  assert ap["ap_inf"] == pytest.approx(1.0)
  assert ap["ap_1"] == pytest.approx(1.0)
  assert ap["ap_0p5"] == pytest.approx(1.0)
  # Only the first of two objects is found: recall 1/2 at precision 1.
  assert ap["ap_0p25"] == pytest.approx(0.5)
  assert ap["ap_0p125"] == pytest.approx(0.5)


def test_ap_each_target_matched_once():
  target = _objects((0.2, 0.2, 0, 1), (0.6, 0.6, 1, 1))
  # Two confident predictions of the first object, then the second object.
  prediction = _objects((0.2, 0.2, 0, 0.9), (0.21, 0.2, 0, 0.8), (0.6, 0.6, 1, 0.7))
  hits = metrics.set_prediction_hits(prediction[None], target[None], 2, CATEGORIES, SCALE)
  np.testing.assert_array_equal(hits[0, :, 0], [True, False, True])
  # TP FP TP: precisions 1, 1/2, 2/3 at recalls 1/2, 1/2, 1 -> 1/2 + 2/3 * 1/2.
  assert _ap(prediction[None], target[None])["ap_inf"] == pytest.approx(0.5 + 1 / 3)


def test_ap_merged_batches_equal_one_batch_and_skip_padding():
  rng = np.random.default_rng(0)
  target = np.zeros((6, 4, 6), np.float32)
  target[..., :2] = rng.uniform(size=(6, 4, 2))
  target[np.arange(6)[:, None], np.arange(4), 2 + rng.integers(0, 3, (6, 4))] = 1.0
  target[..., -1] = rng.uniform(size=(6, 4)) < 0.7
  prediction = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
  mask = np.ones(6, bool)
  whole = metrics.set_prediction_metrics_from_batch(
      np.zeros(6), prediction, target, mask, 2, CATEGORIES, SCALE).compute()
  parts = [metrics.set_prediction_metrics_from_batch(
      np.zeros(3), prediction[s], target[s], mask[s], 2, CATEGORIES, SCALE)
           for s in (slice(0, 3), slice(3, 6))]
  merged = parts[0].merge(parts[1]).compute()
  padded = metrics.set_prediction_metrics_from_batch(
      np.zeros(8), np.concatenate([prediction, prediction[:2]]),
      np.concatenate([target, target[:2]]), np.arange(8) < 6, 2, CATEGORIES, SCALE).compute()
  for key in ("ap_inf", "ap_1", "ap_0p5", "ap_0p25", "ap_0p125"):
    assert merged[key] == pytest.approx(whole[key])
    assert padded[key] == pytest.approx(whole[key])
  assert 0.0 < whole["ap_0p125"] < whole["ap_inf"] <= 1.0


@pytest.mark.parametrize("size", [1, 4, 11])
def test_linear_sum_assignment_matches_scipy(size):
  rng = np.random.default_rng(size)
  costs = rng.normal(size=(20, size, size)).astype(np.float32)
  costs[:10] = np.round(costs[:10])  # Many ties.
  assignment = np.asarray(jax.jit(jax.vmap(losses.linear_sum_assignment))(costs))
  for cost, columns in zip(costs, assignment):
    assert sorted(columns) == list(range(size))
    rows, best = scipy.optimize.linear_sum_assignment(cost)
    assert cost[np.arange(size), columns].sum() == pytest.approx(cost[rows, best].sum(), abs=1e-4)


def test_matched_loss_is_minimum_over_permutations_and_invariant():
  rng = np.random.default_rng(1)
  prediction = rng.uniform(size=(3, 4, 6)).astype(np.float32)
  target = rng.uniform(size=(3, 4, 6)).astype(np.float32)
  matched_loss = jax.jit(losses.hungarian_huber)
  loss = np.asarray(matched_loss(prediction, target))
  for b in range(3):
    brute = min(np.sum(np.mean(np.where(
        np.abs(d := prediction[b] - target[b][list(perm)]) <= 1, 0.5 * d**2, np.abs(d) - 0.5),
                                        axis=-1)) for perm in itertools.permutations(range(4)))
    assert loss[b] == pytest.approx(brute, rel=1e-5)
  permuted = np.asarray(matched_loss(prediction, target[:, rng.permutation(4)]))
  np.testing.assert_allclose(permuted, loss, rtol=1e-6)
  # Gradients flow to the prediction through the matched pairs.
  grad = jax.jit(jax.grad(lambda p: losses.hungarian_huber(p, target).sum()))(prediction)
  assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


def test_shapes_set_target_matches_objects():
  config = shapes.ShapesConfig(name="t", resolution=32, min_objects=2, max_objects=4,
                               num_colors=4, num_train=1, num_validation=1)
  example = shapes.generate_example(config, "train", 3)
  features = {"objects": {k: tf.constant(v) for k, v in example["objects"].items()}}
  target = preprocessing.parse_op("shapes_set_target(5, 4, 0.17)")(features)["target"].numpy()
  n = int(example["num_objects"])
  assert target.shape == (5, 2 + 6 + 4 + 2 + 1)
  np.testing.assert_array_equal(target[:, -1], np.arange(5) < n)
  np.testing.assert_allclose(target[:n, :2], example["objects"]["position"])
  np.testing.assert_array_equal(np.argmax(target[:n, 2:8], -1), example["objects"]["shape"])
  np.testing.assert_array_equal(np.argmax(target[:n, 12:14], -1),
                                example["objects"]["size"] >= 0.17)
  colors = np.argmax(target[:n, 8:12], -1)
  assert len(set(colors)) == n  # Objects in a scene have distinct hues.
  assert not target[n:].any()


class _LocalClevr(tfds.builder_cls("clevr"), skip_registration=True):
  """TFDS clevr 3.1.0 (the real schema) with a few generated scenes, no download."""

  name = "clevr"
  VERSION = tfds.core.Version(set_targets.CLEVR_VERSION)
  NUM_OBJECTS = {"train": (3, 12, 5), "validation": (2, 4)}

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self.NUM_OBJECTS}

  def _generate_examples(self, split):  # pylint: disable=arguments-differ
    rng = np.random.default_rng(len(split))
    for index, count in enumerate(self.NUM_OBJECTS[split]):
      objects = [{"color": int(rng.integers(8)), "material": int(rng.integers(2)),
                  "shape": int(rng.integers(3)), "size": int(rng.integers(2)),
                  "rotation": float(rng.uniform(0, 360)),
                  "3d_coords": rng.uniform(-3, 3, 3).astype(np.float32),
                  "pixel_coords": rng.uniform(0, 300, 3).astype(np.float32)}
                 for _ in range(count)]
      yield f"{split}_{index}", {
          "image": rng.integers(0, 255, (320, 480, 3), dtype=np.uint8),
          "file_name": f"CLEVR_{split}_{index:06d}.png",
          "question_answer": [{"question": "How many?", "answer": str(count)}],
          "objects": objects,
      }


@pytest.fixture(scope="module")
def clevr_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp("clevr_tfds"))
  _LocalClevr(data_dir=data_dir).download_and_prepare()
  return data_dir


def _clevr_config(data_dir: str) -> ml_collections.ConfigDict:
  return config_files.load_config(
      os.path.join(training_utils.REPO, "configs", "clevr_set_prediction.py"),
      **{"data.data_dir": data_dir})


def test_clevr_loader_reads_tfds_schema(clevr_dir):
  config = _clevr_config(clevr_dir)
  load = datasets.DATA_SOURCES.get("clevr")
  train, size = load(config.data, True, 1, 0)
  assert size == 3
  examples = list(train.map(preprocessing.build_ops(config.data.preprocess_train))
                  .as_numpy_iterator())
  assert len(examples) == 2  # The 12-object scene is dropped (max_objects 10).
  raw = [e for e in tfds.as_numpy(load(config.data, True, 1, 0)[0])]
  for example, original in zip(examples, raw):
    assert example["image"].shape == (128, 128, 3)
    target = example["target"]
    n = len(original["objects"]["color"])
    assert target.shape == (10, 3 + 8 + 2 + 3 + 2 + 1)
    np.testing.assert_allclose(target[:n, :3], (original["objects"]["3d_coords"] + 3) / 6,
                               rtol=1e-6)
    np.testing.assert_array_equal(np.argmax(target[:n, 3:11], -1), original["objects"]["color"])
    np.testing.assert_array_equal(np.argmax(target[:n, 16:18], -1), original["objects"]["size"])
    np.testing.assert_array_equal(target[:, -1], np.arange(10) < n)
  validation, num_eval = load(config.data, False, 1, 0)
  assert num_eval == 2 and len(list(validation)) == 2


def test_clevr_missing_names_the_synthetic_config(tmp_path):
  config = _clevr_config(str(tmp_path))
  with pytest.raises(ConfigError, match="shapes_set_prediction.py"):
    datasets.DATA_SOURCES.get("clevr")(config.data, True, 1, 0)


@pytest.mark.slow
def test_tiny_training_run_reports_ap(shapes_data_dir, tmp_path):
  config = config_files.load_config(
      os.path.join(training_utils.REPO, "configs", "shapes_set_prediction.py"),
      **{**training_utils.TINY, "data.data_dir": shapes_data_dir, "num_train_steps": 1})
  scalars = training_utils.train_and_evaluate(config, str(tmp_path))
  for key in ("eval/ap_inf", "eval/ap_1", "eval/ap_0p5", "eval/ap_0p25", "eval/ap_0p125"):
    assert 0.0 <= scalars[key] <= 1.0
  assert np.isfinite(scalars["eval/loss"])
