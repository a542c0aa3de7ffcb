"""Where slots put objects: slot points and a linear readout against object centres.

The measurements of `python -m invariant_slots.probe` (see there), on arrays.
"""

import numpy as np

# Ridge penalties `choose_ridge` picks from.
RIDGES = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def covering_slots(pred_ids: np.ndarray, target_ids: np.ndarray, num_objects: int
                   ) -> np.ndarray:
  """For objects `1..num_objects`, the slot most of their rays go to (-1 if unseen).

  Args:
    pred_ids, target_ids: `[rays]` slot and object ids (0 = background).
    num_objects: Number of objects in the scene.

  Returns:
    `[num_objects]` slot indices.
  """
  slots = np.full(num_objects, -1)
  for obj in range(1, num_objects + 1):
    covered = pred_ids[target_ids == obj]
    if covered.size:
      slots[obj - 1] = np.bincount(covered).argmax()
  return slots


def _with_bias(features: np.ndarray) -> np.ndarray:
  return np.concatenate([features, np.ones((len(features), 1))], axis=1)


def ridge_fit(features: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
  """Weights `[dims + 1, outputs]` of `targets ~ [features, 1] @ W` with an L2 penalty."""
  x = _with_bias(features)
  penalty = ridge * np.eye(x.shape[1])
  penalty[-1, -1] = 0.0
  return np.linalg.solve(x.T @ x + penalty, x.T @ targets)


def _mean_distance(guess: np.ndarray, truth: np.ndarray) -> float:
  return float(np.linalg.norm(guess - truth, axis=-1).mean())


def _predict(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
  return _with_bias(features) @ weights


def choose_ridge(features: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> float:
  """The penalty of `RIDGES` with the smallest two-fold error, folds split by `groups` parity."""
  folds = groups % 2 == 0

  def error(ridge):
    return sum(_mean_distance(_predict(features[~fold], ridge_fit(features[fold], targets[fold],
                                                                   ridge)), targets[~fold])
               for fold in (folds, ~folds))

  return min(RIDGES, key=error)


def probe(slots: np.ndarray, positions: np.ndarray, pred_ids: np.ndarray,
          target_ids: np.ndarray, centres: list[np.ndarray]) -> dict[str, float]:
  """The errors of the module docstring.

  Args:
    slots: `[scenes, num_slots, slot_size]`.
    positions: `[scenes, num_slots, 3]`.
    pred_ids, target_ids: `[scenes, rays]`.
    centres: Per scene, `[objects, 3]` (object `j` has id `j + 1`).
  """
  if len(centres) < 4:
    raise ValueError(f"The probe needs at least 4 scenes, got {len(centres)}; "
                     "probe more scenes.")
  rows = []  # (scene, slot vector, slot position, centre)
  for scene, scene_centres in enumerate(centres):
    for obj, slot in enumerate(covering_slots(pred_ids[scene], target_ids[scene],
                                              len(scene_centres))):
      if slot >= 0:
        rows.append((scene, slots[scene, slot], positions[scene, slot], scene_centres[obj]))
  if not rows:
    raise ValueError("No object is visible in the held-out views of the probed scenes.")
  scene_of_row = np.array([r[0] for r in rows])
  vectors, points, truth = (np.stack([r[i] for r in rows]) for i in (1, 2, 3))
  fit = scene_of_row < len(centres) // 2
  if len(set(scene_of_row[fit] % 2)) < 2 or fit.all():
    raise ValueError("The probe needs objects in both halves of the scenes and in two scenes "
                     "of the first half; probe more scenes.")
  ridge = choose_ridge(vectors[fit], truth[fit], scene_of_row[fit])
  weights = ridge_fit(vectors[fit], truth[fit], ridge)
  return {"objects": len(rows), "position_error": _mean_distance(points, truth),
          "probe_error": _mean_distance(_predict(vectors[~fit], weights), truth[~fit]),
          "probe_ridge": ridge,
          "baseline_error": _mean_distance(truth[fit].mean(axis=0), truth[~fit])}
