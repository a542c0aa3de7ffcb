"""Segmentation and reconstruction metrics, and CLU metric collections.

Segmentations are integer arrays of shape `[batch, ...]` (e.g.
`[batch, height, width]` or `[batch, num_frames, height, width]`) holding ids
in `[0, num_instances)`. In ground-truth segmentations id 0 is the background;
predicted ids are slot indices and none of them is special.
"""

from typing import Any, Mapping, Sequence

import clu.metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

Array = jnp.ndarray


def predicted_segmentation(masks: Array) -> Array:
  """Arg-max slot per pixel: `[..., num_slots, H, W, 1]` -> `[..., H, W]`."""
  return jnp.argmax(masks[..., 0], axis=-3)


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


def mean_train_scalars(steps: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """The logged training scalars of `steps`, the host values of consecutive
  train steps' scalars (`loss`, `grad_norm`, `grad_norm_<module>`, ...): the
  mean of each over the steps, except `learning_rate`, the last step's.

  Reduced on the host in one pass: merging a metrics collection on device after
  every step costs more dispatches than a small model's step itself.
  """
  if not steps:
    raise ValueError("mean_train_scalars needs at least one step.")
  return {k: float(steps[-1][k]) if k == "learning_rate"
          else float(np.mean([step[k] for step in steps], dtype=np.float64))
          for k in steps[0]}


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


# Set prediction: average precision as defined by Locatello et al. (2020).

# Distance thresholds of the set-prediction AP; inf accepts any position.
AP_DISTANCE_THRESHOLDS: tuple[float, ...] = (np.inf, 1.0, 0.5, 0.25, 0.125)


def _split_set_properties(values: np.ndarray, num_coords: int,
                          category_sizes: tuple[int, ...]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`[..., num_coords + sum(category_sizes) + 1]` -> coordinates
  `[..., num_coords]`, class ids `[..., num_categories]` (arg-max of each
  one-hot or score group) and the last entry (presence) `[...]`."""
  coords = values[..., :num_coords]
  bounds = np.cumsum((num_coords,) + tuple(category_sizes))
  classes = np.stack([np.argmax(values[..., start:stop], axis=-1)
                      for start, stop in zip(bounds[:-1], bounds[1:])], axis=-1)
  return coords, classes, values[..., -1]


def set_prediction_hits(prediction: np.ndarray, target: np.ndarray, num_coords: int,
                        category_sizes: tuple[int, ...], coordinate_scale: float,
                        thresholds: tuple[float, ...] = AP_DISTANCE_THRESHOLDS
                        ) -> np.ndarray:
  """Which predictions are true positives, per distance threshold.

  Within each example, predictions are visited by decreasing confidence (the
  last entry). A prediction's candidate is the closest present target object
  with every categorical attribute equal to the prediction's arg-max classes;
  it is a true positive if that distance, `coordinate_scale *
  ||coords_pred - coords_target||`, is below the threshold and the candidate
  was not already claimed by a more confident prediction. Every other
  prediction is a false positive.

  Args:
    prediction: `[batch, num_slots, num_coords + sum(category_sizes) + 1]`:
      coordinates in [0, 1], one score per class of each attribute, confidence.
    target: `[batch, num_objects, same]`: coordinates, one-hot classes,
      presence (1 for a real object, 0 for padding).
    num_coords: Number of leading coordinate entries.
    category_sizes: Number of classes of each categorical attribute, in order.
    coordinate_scale: Distance unit per coordinate unit (6 maps CLEVR's [0, 1]
      coordinates back to its [-3, 3] scene units).
    thresholds: Distance thresholds; `np.inf` accepts any position.

  Returns:
    bool `[batch, num_slots, len(thresholds)]`.
  """
  prediction, target = np.asarray(prediction), np.asarray(target)
  pred_coords, pred_classes, confidence = _split_set_properties(
      prediction, num_coords, category_sizes)
  true_coords, true_classes, presence = _split_set_properties(
      target, num_coords, category_sizes)
  hits = np.zeros(prediction.shape[:2] + (len(thresholds),), bool)
  for b in range(prediction.shape[0]):
    # [num_slots, num_objects]: same classes as a real object, and its distance.
    same = np.all(pred_classes[b][:, None] == true_classes[b][None], axis=-1)
    same &= presence[b][None] > 0.5
    distance = coordinate_scale * np.linalg.norm(
        pred_coords[b][:, None] - true_coords[b][None], axis=-1)
    distance = np.where(same, distance, np.inf)
    for t, threshold in enumerate(thresholds):
      claimed = np.zeros(target.shape[1], bool)
      for slot in np.argsort(-confidence[b], kind="stable"):
        if not same[slot].any():
          continue
        best = int(np.argmin(distance[slot]))
        if (np.isinf(threshold) or distance[slot, best] < threshold) and not claimed[best]:
          claimed[best] = True
          hits[b, slot, t] = True
  return hits


def average_precision(confidence: np.ndarray, true_positive: np.ndarray,
                      num_objects: float) -> float:
  """Area under the precision-recall curve of detections ranked by confidence.

  Precision is made non-increasing in recall (each value replaced by the
  largest precision at any higher rank) and summed over the steps where recall
  changes, as in the Slot Attention set-prediction evaluation.

  Args:
    confidence: `[num_predictions]`, higher ranks first.
    true_positive: bool `[num_predictions]`.
    num_objects: Number of real target objects (the recall denominator).

  Returns:
    AP in [0, 1]; 0 when there is no target object.
  """
  if num_objects <= 0:
    return 0.0
  order = np.argsort(-np.asarray(confidence), kind="stable")
  hits = np.asarray(true_positive, np.float64)[order]
  cumulative_tp = np.cumsum(hits)
  recall = np.concatenate([[0.0], cumulative_tp / num_objects, [1.0]])
  precision = np.concatenate([[0.0], cumulative_tp / np.arange(1, len(hits) + 1), [0.0]])
  precision = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.nonzero(recall[1:] != recall[:-1])[0]
  return float(np.sum(precision[steps + 1] * (recall[steps + 1] - recall[steps])))


@flax.struct.dataclass
class AveragePrecision(clu.metrics.Metric):
  """AP over every prediction seen; `merge` concatenates, `compute` ranks them all.

  Build one with `from_hits(confidence, true_positive, num_objects)`.
  """

  confidence: np.ndarray
  true_positive: np.ndarray
  num_objects: np.ndarray

  @classmethod
  def from_hits(cls, confidence: np.ndarray, true_positive: np.ndarray,
                num_objects: float) -> "AveragePrecision":
    return cls(confidence=np.asarray(confidence, np.float32).ravel(),
               true_positive=np.asarray(true_positive, bool).ravel(),
               num_objects=np.asarray(num_objects, np.float64))

  @classmethod
  def empty(cls) -> "AveragePrecision":
    return cls.from_hits(np.zeros(0), np.zeros(0, bool), 0.0)

  def merge(self, other: "AveragePrecision") -> "AveragePrecision":
    return type(self)(
        confidence=np.concatenate([self.confidence, other.confidence]),
        true_positive=np.concatenate([self.true_positive, other.true_positive]),
        num_objects=self.num_objects + other.num_objects)

  def compute(self) -> float:
    return average_precision(self.confidence, self.true_positive, float(self.num_objects))


@flax.struct.dataclass
class SetPredictionMetrics(clu.metrics.Collection):
  """Loss and AP at the distance thresholds inf, 1, 0.5, 0.25, 0.125."""

  loss: clu.metrics.Average.from_output("loss")
  ap_inf: AveragePrecision
  ap_1: AveragePrecision
  ap_0p5: AveragePrecision
  ap_0p25: AveragePrecision
  ap_0p125: AveragePrecision


def set_prediction_metrics_from_batch(loss: np.ndarray, prediction: np.ndarray,
                                      target: np.ndarray, mask: np.ndarray, num_coords: int,
                                      category_sizes: tuple[int, ...],
                                      coordinate_scale: float) -> SetPredictionMetrics:
  """The `SetPredictionMetrics` update of one batch; padding rows (`mask` False) are
  left out. Shapes as in `set_prediction_hits`; `loss` and `mask` are `[batch]`."""
  mask = np.asarray(mask, bool)
  prediction, target = np.asarray(prediction)[mask], np.asarray(target)[mask]
  hits = set_prediction_hits(prediction, target, num_coords, category_sizes,
                             coordinate_scale, AP_DISTANCE_THRESHOLDS)
  confidence = prediction[..., -1]
  num_objects = float(np.sum(target[..., -1] > 0.5))
  aps = [AveragePrecision.from_hits(confidence, hits[..., t], num_objects)
         for t in range(len(AP_DISTANCE_THRESHOLDS))]
  return SetPredictionMetrics(
      _reduction_counter=clu.metrics._ReductionCounter(jnp.array(1, jnp.int32)),  # pylint: disable=protected-access
      loss=clu.metrics.Average.from_model_output(jnp.asarray(loss), mask=jnp.asarray(mask)),
      ap_inf=aps[0], ap_1=aps[1], ap_0p5=aps[2], ap_0p25=aps[3], ap_0p125=aps[4])


# ----------------------------------------------------- thresholded segmentation


def threshold_grid(start: float = 0.0, stop: float = 0.95, step: float = 0.025) -> np.ndarray:
  """Mask-probability thresholds `start, start + step, ..., stop` (inclusive), float64."""
  if step <= 0 or stop < start:
    raise ValueError(f"Need step > 0 and stop >= start, got {start}, {stop}, {step}.")
  return start + step * np.arange(int(np.floor((stop - start) / step + 1e-6)) + 1)


def thresholded_segmentation(probabilities: Array, threshold: float) -> Array:
  """Arg-max slot per pixel where its probability is at least `threshold`.

  Args:
    probabilities: Slot probabilities `[batch, num_slots, ...]` (summing to 1
      over slots).
    threshold: Minimum probability of the arg-max slot.

  Returns:
    int32 ids `[batch, ...]` in `[0, num_slots]`; `num_slots` marks unassigned
    pixels.
  """
  ids = jnp.argmax(probabilities, axis=1)
  confident = jnp.max(probabilities, axis=1) >= threshold
  return jnp.where(confident, ids, probabilities.shape[1]).astype(jnp.int32)


def thresholded_mean_iou(true_ids: np.ndarray, pred_ids: np.ndarray,
                         confidence: np.ndarray, thresholds: np.ndarray,
                         num_instances_true: int, num_instances_pred: int,
                         ignore_background: bool = True) -> np.ndarray:
  """Hungarian mIoU of thresholded segmentations, for every threshold.

  At threshold `tau` a pixel keeps its predicted id where `confidence >= tau`
  and is unassigned otherwise; unassigned pixels belong to no predicted
  segment, so they lower the IoU of the true object they belong to.

  Args:
    true_ids: Ground-truth segmentation, int `[batch, ...]`.
    pred_ids: Arg-max slot ids of the same shape.
    confidence: Probability of the arg-max slot, same shape.
    thresholds: `[num_thresholds]`.
    num_instances_true: Number of ground-truth ids (exclusive upper bound).
    num_instances_pred: Number of predicted ids (exclusive upper bound).
    ignore_background: If True, true id 0 is not an object.

  Returns:
    float32 `[batch, num_thresholds]`; NaN rows for examples without objects.
  """
  true_ids, confidence = np.asarray(true_ids), np.asarray(confidence)
  result = []
  for threshold in np.asarray(thresholds):
    ids = np.where(confidence >= threshold, np.asarray(pred_ids), num_instances_pred)
    contingency = _contingency_np(true_ids, ids, num_instances_true, num_instances_pred + 1)
    # The union uses the full true areas (unassigned pixels included).
    ious = _iou_from_contingency(contingency)[..., :num_instances_pred]
    present = contingency.sum(axis=2) > 0
    if ignore_background:
      present[:, 0] = False
    per_example = np.full(len(ious), np.nan, np.float32)
    for i, (example_ious, example_present) in enumerate(zip(ious, present)):
      if example_present.any():
        object_ious = example_ious[example_present]
        rows, cols = scipy.optimize.linear_sum_assignment(object_ious, maximize=True)
        per_example[i] = object_ious[rows, cols].sum() / np.count_nonzero(example_present)
    result.append(per_example)
  return np.stack(result, axis=1)


@flax.struct.dataclass
class ThresholdSweep(clu.metrics.Metric):
  """Mean of a per-example score at every threshold; NaN or masked rows skipped.

  `compute` gives the best mean over thresholds; `best_threshold` the
  threshold where it is reached (the first one on ties).
  """

  thresholds: Array  # [num_thresholds]
  total: Array  # [num_thresholds]
  count: Array  # [num_thresholds]

  @classmethod
  def from_model_output(cls, threshold_scores: Array, thresholds: Array,
                        mask: Array | None = None, **_: Any) -> "ThresholdSweep":
    """`threshold_scores [batch, num_thresholds]`, `thresholds [num_thresholds]`."""
    scores = jnp.asarray(threshold_scores, jnp.float32)
    valid = ~jnp.isnan(scores)
    if mask is not None:
      valid &= jnp.asarray(mask, dtype=bool)[:, None]
    return cls(thresholds=jnp.asarray(thresholds, jnp.float32),
               total=jnp.sum(jnp.where(valid, scores, 0.0), axis=0),
               count=jnp.sum(valid, axis=0).astype(jnp.float32))

  def merge(self, other: "ThresholdSweep") -> "ThresholdSweep":
    return type(self)(thresholds=self.thresholds, total=self.total + other.total,
                      count=self.count + other.count)

  def means(self) -> Array:
    return self.total / jnp.maximum(self.count, 1.0)

  def compute(self) -> Array:
    return jnp.max(self.means())

  def best_threshold(self) -> Array:
    return self.thresholds[jnp.argmax(self.means())]


@flax.struct.dataclass
class BestThreshold(ThresholdSweep):
  """A `ThresholdSweep` whose `compute` is the best threshold."""

  def compute(self) -> Array:
    return self.best_threshold()


def nan_skipping_average(name: str) -> type[clu.metrics.Average]:
  """An `Average` of model output `name` `[batch]` that skips NaN entries."""

  def values(mask: Array | None = None, **outputs: Any) -> dict[str, Array]:
    value = jnp.asarray(outputs[name], jnp.float32)
    valid = ~jnp.isnan(value)
    if mask is not None:
      valid &= jnp.asarray(mask, dtype=bool)
    return {"values": value, "mask": valid}

  return clu.metrics.Average.from_fun(values)
