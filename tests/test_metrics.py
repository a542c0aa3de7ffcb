"""Tests for invariant_slots.lib.metrics."""

import itertools

import jax
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from invariant_slots.lib import metrics

_ari_jit = jax.jit(metrics.adjusted_rand_index, static_argnums=(2, 3, 4))


def _random_segmentations(seed, shape, num_true, num_pred, noise=0.3):
  """True ids and predictions that are relabelled, partly corrupted copies."""
  rng = np.random.default_rng(seed)
  true_ids = rng.integers(0, num_true, size=shape)
  relabel = rng.integers(0, num_pred, size=num_true)
  pred_ids = relabel[true_ids]
  corrupt = rng.random(shape) < noise
  pred_ids = np.where(corrupt, rng.integers(0, num_pred, size=shape), pred_ids)
  return true_ids, pred_ids


def _sklearn_ari(true_ids, pred_ids, ignore_background):
  """Per-example sklearn ARI on flattened (foreground-filtered) labels."""
  scores = []
  for t, p in zip(true_ids, pred_ids):
    t, p = t.ravel(), p.ravel()
    if ignore_background:
      t, p = t[t != 0], p[t != 0]
    scores.append(sk_metrics.adjusted_rand_score(t, p))
  return np.array(scores)


@pytest.mark.parametrize("ignore_background", [False, True])
@pytest.mark.parametrize("shape", [(4, 8, 8), (3, 3, 6, 6)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ari_matches_sklearn(seed, shape, ignore_background):
  num_true, num_pred = 5, 7
  true_ids, pred_ids = _random_segmentations(seed, shape, num_true, num_pred)
  ari = _ari_jit(true_ids, pred_ids, num_true, num_pred, ignore_background)
  assert ari.shape == (shape[0],)
  assert ari.dtype == np.float32
  np.testing.assert_allclose(
      ari, _sklearn_ari(true_ids, pred_ids, ignore_background), atol=1e-5)


def test_ari_matches_sklearn_large_video():
  num_true, num_pred = 6, 11
  true_ids, pred_ids = _random_segmentations(
      3, (2, 6, 64, 64), num_true, num_pred, noise=0.1)
  for ignore_background in (False, True):
    ari = _ari_jit(true_ids, pred_ids, num_true, num_pred, ignore_background)
    np.testing.assert_allclose(
        ari, _sklearn_ari(true_ids, pred_ids, ignore_background), atol=1e-4)


_EDGE_CASES = {
    "single_cluster_both": ([[0, 0], [0, 0]], [[3, 3], [3, 3]]),
    "single_fg_cluster_both": ([[1, 1], [1, 1]], [[2, 2], [2, 2]]),
    "permuted_ids": ([[0, 1], [2, 2]], [[2, 0], [1, 1]]),
    "all_singletons": ([[0, 1], [2, 3]], [[3, 2], [1, 0]]),
    "empty_foreground": ([[0, 0], [0, 0]], [[0, 1], [2, 3]]),
    "one_fg_point": ([[0, 0], [0, 2]], [[0, 1], [2, 3]]),
    "pred_one_cluster": ([[0, 1], [2, 3]], [[1, 1], [1, 1]]),
    "pred_one_cluster_fg": ([[1, 1], [2, 3]], [[0, 0], [0, 0]]),
    "true_one_cluster_pred_split": ([[1, 1], [1, 1]], [[0, 0], [1, 2]]),
    "discordant": ([[1, 1], [2, 2]], [[0, 1], [0, 1]]),
}


@pytest.mark.parametrize("ignore_background", [False, True])
@pytest.mark.parametrize("case", sorted(_EDGE_CASES))
def test_ari_edge_cases_match_sklearn(case, ignore_background):
  true_ids, pred_ids = (np.array(x)[None] for x in _EDGE_CASES[case])
  ari = _ari_jit(true_ids, pred_ids, 4, 4, ignore_background)
  assert not np.isnan(ari).any()
  np.testing.assert_allclose(
      ari, _sklearn_ari(true_ids, pred_ids, ignore_background), atol=1e-6)


def test_ari_edge_case_values():
  cases = [_EDGE_CASES[c] for c in ("single_cluster_both", "permuted_ids",
                                    "all_singletons", "pred_one_cluster")]
  true_ids = np.array([c[0] for c in cases])
  pred_ids = np.array([c[1] for c in cases])
  np.testing.assert_allclose(
      _ari_jit(true_ids, pred_ids, 4, 4, False), [1.0, 1.0, 1.0, 0.0])
  empty_fg = np.zeros((1, 2, 2), np.int32)
  np.testing.assert_allclose(
      _ari_jit(empty_fg, empty_fg + 1, 4, 4, True), [1.0])


def test_ari_invariant_to_pred_permutation():
  num_true, num_pred = 5, 7
  true_ids, pred_ids = _random_segmentations(4, (4, 3, 6, 6), num_true,
                                             num_pred)
  permutation = np.random.default_rng(5).permutation(num_pred)
  for ignore_background in (False, True):
    np.testing.assert_allclose(
        _ari_jit(true_ids, pred_ids, num_true, num_pred, ignore_background),
        _ari_jit(true_ids, permutation[pred_ids], num_true, num_pred,
                 ignore_background),
        atol=1e-6)


def _brute_force_miou(true_ids, pred_ids, num_pred, ignore_background):
  """mIoU of one example by trying every one-to-one matching."""
  objects = [i for i in np.unique(true_ids) if i or not ignore_background]
  if not objects:
    return np.nan
  iou = np.zeros((len(objects), num_pred))
  for row, obj in enumerate(objects):
    for pred in range(num_pred):
      t, p = true_ids == obj, pred_ids == pred
      iou[row, pred] = (t & p).sum() / (t | p).sum()
  rows = range(len(objects))
  if len(objects) <= num_pred:
    best = max(iou[rows, list(cols)].sum()
               for cols in itertools.permutations(range(num_pred),
                                                  len(objects)))
  else:
    best = max(iou[list(perm), range(num_pred)].sum()
               for perm in itertools.permutations(rows, num_pred))
  return best / len(objects)


@pytest.mark.parametrize("ignore_background", [True, False])
@pytest.mark.parametrize("num_true,num_pred", [(4, 4), (4, 3), (3, 5)])
def test_miou_matches_brute_force(num_true, num_pred, ignore_background):
  rng = np.random.default_rng(num_true * 10 + num_pred)
  true_ids = rng.integers(0, num_true, size=(6, 6, 6))
  pred_ids = rng.integers(0, num_pred, size=(6, 6, 6))
  # Drop one true object from an example so absent objects are covered.
  true_ids[0][true_ids[0] == num_true - 1] = 0
  miou = metrics.mean_iou_hungarian(true_ids, pred_ids, num_true, num_pred,
                                    ignore_background)
  assert miou.shape == (6,)
  assert miou.dtype == np.float32
  expected = [
      _brute_force_miou(t, p, num_pred, ignore_background)
      for t, p in zip(true_ids, pred_ids)
  ]
  np.testing.assert_allclose(miou, expected, rtol=1e-6)


def test_miou_perfect_match_and_no_foreground():
  rng = np.random.default_rng(0)
  true_ids = rng.integers(0, 4, size=(2, 2, 5, 5))
  true_ids[1] = 0
  pred_ids = np.array([6, 2, 0, 3])[true_ids]
  miou = metrics.mean_iou_hungarian(true_ids, pred_ids, 4, 7)
  assert miou[0] == 1.0
  assert np.isnan(miou[1])


def test_iou_matrix():
  true_ids = np.array([[[0, 0], [1, 1]]])
  pred_ids = np.array([[[0, 1], [1, 1]]])
  np.testing.assert_allclose(
      metrics.iou_matrix(true_ids, pred_ids, 2, 3),
      [[[1 / 2, 1 / 4, 0.0], [0.0, 2 / 3, 0.0]]])


def test_psnr():
  rng = np.random.default_rng(0)
  pred = rng.random((3, 4, 5, 3)).astype(np.float32)
  target = rng.random((3, 4, 5, 3)).astype(np.float32)
  for max_value in (1.0, 255.0):
    mse = ((pred * max_value - target * max_value)**2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        metrics.psnr(pred * max_value, target * max_value, max_value),
        10 * np.log10(max_value**2 / mse), rtol=1e-5)


def test_eval_metrics_merge_is_mean_over_valid_examples():
  rng = np.random.default_rng(0)
  fields = ("loss", "ari", "fg_ari", "fg_miou", "psnr")
  batches = []
  for batch_size, mask in ((3, [True, True, False]),
                           (5, [True, False, True, True, True])):
    values = {k: rng.random(batch_size).astype(np.float32) for k in fields}
    values["fg_miou"][-1] = np.nan
    # A padded example holding NaN everywhere must not leak into any mean.
    for k in fields:
      values[k][~np.array(mask)] = np.nan
    batches.append((values, np.array(mask)))

  update = jax.jit(metrics.eval_metrics_from_batch)
  collection = None
  for values, mask in batches:
    batch_metrics = update(mask=mask, **values)
    collection = (batch_metrics
                  if collection is None else collection.merge(batch_metrics))
  result = collection.compute()

  assert set(result) == set(fields)
  for k in fields:
    all_values = np.concatenate([v[k][m] for v, m in batches])
    assert len(all_values) == 6
    if k == "fg_miou":
      assert np.isnan(all_values).sum() == 1
    np.testing.assert_allclose(result[k], np.nanmean(all_values), rtol=1e-6)


def test_mean_train_scalars_averages_all_but_the_learning_rate():
  steps = [{"loss": np.float32(step), "grad_norm": np.float32(2 * step),
            "grad_norm_decoder": np.float32(step * step), "learning_rate": np.float32(0.1 * step)}
           for step in range(3)]
  result = metrics.mean_train_scalars(steps)
  np.testing.assert_allclose(result["loss"], 1.0)
  np.testing.assert_allclose(result["grad_norm"], 2.0)
  np.testing.assert_allclose(result["grad_norm_decoder"], 5 / 3)
  np.testing.assert_allclose(result["learning_rate"], 0.2)  # The last step's, not the mean.
  assert all(isinstance(v, float) for v in result.values())


def test_mean_train_scalars_needs_a_step():
  with pytest.raises(ValueError, match="at least one step"):
    metrics.mean_train_scalars([])
