"""Segmentation and reconstruction metrics, and CLU metric collections.

Segmentations are integer arrays of shape `[batch, ...]` (e.g.
`[batch, height, width]` or `[batch, num_frames, height, width]`) holding ids
in `[0, num_instances)`. In ground-truth segmentations id 0 is the background;
predicted ids are slot indices and none of them is special.
"""

from typing import Any

import clu.metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

Array = jnp.ndarray


def _flat_one_hot(ids: Array, num_classes: int) -> Array:
  """Flattens `[batch, ...]` ids to a `[batch, points, num_classes]` one-hot."""
  ids = jnp.reshape(ids, (ids.shape[0], -1))
  return jax.nn.one_hot(ids, num_classes, dtype=jnp.float32)


def adjusted_rand_index(
    true_ids: Array,
    pred_ids: Array,
    num_instances_true: int,
    num_instances_pred: int,
    ignore_background: bool = False,
) -> Array:
  """Adjusted Rand index (ARI) per example, matching sklearn.

  Equals `sklearn.metrics.adjusted_rand_score` on each example's flattened
  labels, including its special case: labelings that agree up to a permutation
  of ids (which covers a single cluster on both sides, one cluster per point
  on both sides, and no points at all) score 1.0.

  Args:
    true_ids: Ground-truth segmentation, int `[batch, ...]`.
    pred_ids: Predicted segmentation of the same shape as `true_ids`.
    num_instances_true: Number of ground-truth ids (exclusive upper bound).
    num_instances_pred: Number of predicted ids (exclusive upper bound).
    ignore_background: If True, points whose ground-truth id is 0 are left out
      (FG-ARI).

  Returns:
    ARI per example, float32 `[batch]`.
  """
  true_oh = _flat_one_hot(true_ids, num_instances_true)
  pred_oh = _flat_one_hot(pred_ids, num_instances_pred)
  if ignore_background:
    # Background points get an all-zero row and drop out of every count.
    true_oh = true_oh[..., 1:]
  contingency = jnp.einsum(
      "bnt,bnp->btp", true_oh, pred_oh, precision=jax.lax.Precision.HIGHEST)
  true_sizes = contingency.sum(axis=2)  # [batch, num_instances_true]
  pred_sizes = contingency.sum(axis=1)  # [batch, num_instances_pred]
  num_points = true_sizes.sum(axis=1)  # [batch]

  # Ordered pairs of distinct points in the same cluster.
  pairs_both = jnp.sum(contingency * (contingency - 1), axis=(1, 2))
  pairs_true = jnp.sum(true_sizes * (true_sizes - 1), axis=1)
  pairs_pred = jnp.sum(pred_sizes * (pred_sizes - 1), axis=1)
  all_pairs = num_points * (num_points - 1)

  expected = pairs_true * pairs_pred / jnp.maximum(all_pairs, 1.0)
  maximum = 0.5 * (pairs_true + pairs_pred)
  denominator = maximum - expected
  ari = (pairs_both - expected) / jnp.where(denominator == 0, 1.0, denominator)

  # The labelings agree up to a permutation of ids iff every non-empty cluster
  # of either side meets exactly one cluster of the other side. Counting
  # non-empty cells is exact in float32, unlike the pair counts above.
  num_cells = jnp.sum(contingency > 0, axis=(1, 2))
  agree = ((num_cells == jnp.sum(true_sizes > 0, axis=1)) &
           (num_cells == jnp.sum(pred_sizes > 0, axis=1)))
  return jnp.where(agree, 1.0, ari).astype(jnp.float32)


def _contingency_np(true_ids: np.ndarray, pred_ids: np.ndarray,
                    num_instances_true: int,
                    num_instances_pred: int) -> np.ndarray:
  """Point counts per (true id, pred id) pair, int64 `[batch, true, pred]`."""
  batch_size = true_ids.shape[0]
  true_ids = np.reshape(true_ids, (batch_size, -1)).astype(np.int64)
  pred_ids = np.reshape(pred_ids, (batch_size, -1)).astype(np.int64)
  num_cells = num_instances_true * num_instances_pred
  cell = (np.arange(batch_size)[:, None] * num_cells +
          true_ids * num_instances_pred + pred_ids)
  counts = np.bincount(cell.ravel(), minlength=batch_size * num_cells)
  return counts.reshape(batch_size, num_instances_true, num_instances_pred)


def _iou_from_contingency(contingency: np.ndarray) -> np.ndarray:
  """IoU `[batch, true, pred]` from a contingency table of the same shape."""
  true_areas = contingency.sum(axis=2, keepdims=True)
  pred_areas = contingency.sum(axis=1, keepdims=True)
  union = true_areas + pred_areas - contingency
  return contingency / np.maximum(union, 1)


def iou_matrix(true_ids: np.ndarray, pred_ids: np.ndarray,
               num_instances_true: int,
               num_instances_pred: int) -> np.ndarray:
  """IoU between every true id and every predicted id.

  Args:
    true_ids: Ground-truth segmentation, int `[batch, ...]`.
    pred_ids: Predicted segmentation of the same shape as `true_ids`.
    num_instances_true: Number of ground-truth ids (exclusive upper bound).
    num_instances_pred: Number of predicted ids (exclusive upper bound).

  Returns:
    float64 `[batch, num_instances_true, num_instances_pred]`; 0 where both
    segments are empty.
  """
  return _iou_from_contingency(
      _contingency_np(np.asarray(true_ids), np.asarray(pred_ids),
                      num_instances_true, num_instances_pred))


def mean_iou_hungarian(
    true_ids: np.ndarray,
    pred_ids: np.ndarray,
    num_instances_true: int,
    num_instances_pred: int,
    ignore_background: bool = True,
) -> np.ndarray:
  """Mean IoU of true objects under the IoU-maximising one-to-one matching.

  Each present (non-empty) true object is matched to at most one predicted id
  by the Hungarian algorithm, maximising the summed IoU. Objects left unmatched
  (fewer predicted ids than true objects) count as IoU 0.

  Args:
    true_ids: Ground-truth segmentation, int `[batch, ...]`.
    pred_ids: Predicted segmentation of the same shape as `true_ids`.
    num_instances_true: Number of ground-truth ids (exclusive upper bound).
    num_instances_pred: Number of predicted ids (exclusive upper bound).
    ignore_background: If True, true id 0 is not an object.

  Returns:
    mIoU per example, float32 `[batch]`. NaN for examples without any present
    true object; average with `np.nanmean` or mask them out.
  """
  contingency = _contingency_np(np.asarray(true_ids), np.asarray(pred_ids),
                                num_instances_true, num_instances_pred)
  ious = _iou_from_contingency(contingency)
  present = contingency.sum(axis=2) > 0  # [batch, num_instances_true]
  if ignore_background:
    present[:, 0] = False
  result = np.full(contingency.shape[0], np.nan, dtype=np.float32)
  for i, (example_ious, example_present) in enumerate(zip(ious, present)):
    num_objects = np.count_nonzero(example_present)
    if num_objects:
      object_ious = example_ious[example_present]
      rows, cols = scipy.optimize.linear_sum_assignment(
          object_ious, maximize=True)
      result[i] = object_ious[rows, cols].sum() / num_objects
  return result


def psnr(pred: Array, target: Array, max_value: float = 1.0) -> Array:
  """Peak signal-to-noise ratio per example.

  Args:
    pred: Prediction, `[batch, ...]` (e.g. `[batch, height, width, channels]`).
    target: Target of the same shape as `pred`.
    max_value: Largest possible value of a pixel.

  Returns:
    PSNR in dB, `[batch]`; +inf where `pred` equals `target`.
  """
  axes = tuple(range(1, jnp.ndim(pred)))
  mse = jnp.mean(jnp.square(pred - target), axis=axes)
  return 10.0 * jnp.log10(max_value**2 / mse)


def _masked_fg_miou(fg_miou: Array,
                    mask: Array | None = None,
                    **_: Any) -> dict[str, Array]:
  """Masks out examples whose `fg_miou` is NaN (no foreground object)."""
  valid = ~jnp.isnan(fg_miou)
  if mask is not None:
    valid &= jnp.asarray(mask, dtype=bool)
  return {"values": fg_miou, "mask": valid}


@flax.struct.dataclass
class TrainMetrics(clu.metrics.Collection):
  """Metrics logged during training; model outputs are scalars per step."""

  loss: clu.metrics.Average.from_output("loss")
  grad_norm: clu.metrics.Average.from_output("grad_norm")
  learning_rate: clu.metrics.LastValue.from_output("learning_rate")


@flax.struct.dataclass
class EvalMetrics(clu.metrics.Collection):
  """Evaluation metrics; model outputs are `[batch]` with a `[batch]` mask.

  `fg_miou` additionally skips examples where it is NaN.
  """

  loss: clu.metrics.Average.from_output("loss")
  ari: clu.metrics.Average.from_output("ari")
  fg_ari: clu.metrics.Average.from_output("fg_ari")
  fg_miou: clu.metrics.Average.from_fun(_masked_fg_miou)
  psnr: clu.metrics.Average.from_output("psnr")


def eval_metrics_from_batch(loss: Array, ari: Array, fg_ari: Array,
                            fg_miou: Array, psnr: Array,  # pylint: disable=redefined-outer-name
                            mask: Array) -> EvalMetrics:
  """Builds the `EvalMetrics` update of one batch.

  Args:
    loss: Per-example loss, `[batch]`.
    ari: Per-example ARI, `[batch]`.
    fg_ari: Per-example FG-ARI, `[batch]`.
    fg_miou: Per-example FG-mIoU, `[batch]`; NaN entries are skipped.
    psnr: Per-example PSNR, `[batch]`.
    mask: Which examples are valid (not padding), bool `[batch]`.

  Returns:
    An `EvalMetrics` to `.merge()` with those of other batches.
  """
  return EvalMetrics.single_from_model_output(
      loss=jnp.asarray(loss),
      ari=jnp.asarray(ari),
      fg_ari=jnp.asarray(fg_ari),
      fg_miou=jnp.asarray(fg_miou),
      psnr=jnp.asarray(psnr),
      mask=jnp.asarray(mask, dtype=bool))
