"""Where the slots of a multi-view run put the objects in 3D.

    python -m invariant_slots.probe --workdir=/tmp/mv

For runs on the embedded `shapes_multiview` data, whose object centres the
generator knows. Loads the run's config (or `--config`) and its newest
readable checkpoint (or `--step`), infers the slots of the first
`--num_scenes` eval scenes and takes, for each object seen in the held-out
views, the slot that covers most of its pixels there. Reports, in scene
units (objects have radii 0.5-0.9 in an arena of side 4.4):

* `position_error`: the mean distance from that slot's 3D point (`positions`,
  triangulated from its attention) to the object's centre;
* `probe_error`: the same for a linear map (ridge regression) from the slot
  vector to the centre, fitted on the first half of the scenes and tested on
  the second (the penalty chosen from `RIDGES` by two-fold cross-validation
  on the first half);
* `baseline_error`: predicting the fitting half's mean centre instead.

Prints a table and writes `probe.json` to `--output_dir` (default
`WORKDIR/probe`).
"""

import json
import os

import numpy as np
from absl import app
from absl import flags

from invariant_slots import cli

_NUM_SCENES = flags.DEFINE_integer("num_scenes", 64, "Eval scenes to probe.")
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


def ridge_fit(features: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
  """Weights `[dims + 1, outputs]` of `targets ~ [features, 1] @ W` with an L2 penalty."""
  x = np.concatenate([features, np.ones((len(features), 1))], axis=1)
  penalty = ridge * np.eye(x.shape[1])
  penalty[-1, -1] = 0.0
  return np.linalg.solve(x.T @ x + penalty, x.T @ targets)


def _mean_distance(guess: np.ndarray, truth: np.ndarray) -> float:
  return float(np.linalg.norm(guess - truth, axis=-1).mean())


def _predict(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
  return np.concatenate([features, np.ones((len(features), 1))], axis=1) @ weights


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
    raise ValueError(f"The probe needs at least 4 scenes, got {len(centres)}; raise "
                     "--num_scenes or data.num_eval_examples.")
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
                     "of the first half; raise --num_scenes.")
  ridge = choose_ridge(vectors[fit], truth[fit], scene_of_row[fit])
  weights = ridge_fit(vectors[fit], truth[fit], ridge)
  return {"objects": len(rows), "position_error": _mean_distance(points, truth),
          "probe_error": _mean_distance(_predict(vectors[~fit], weights), truth[~fit]),
          "probe_ridge": ridge,
          "baseline_error": _mean_distance(truth[fit].mean(axis=0), truth[~fit])}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _NUM_SCENES.value < 4:
    cli.fail(f"--num_scenes={_NUM_SCENES.value}: the probe needs at least 4 scenes.")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax  # pylint: disable=g-import-not-at-top
  from invariant_slots.datasets import local_builder  # pylint: disable=g-import-not-at-top
  from invariant_slots.datasets import ops as preprocessing  # pylint: disable=g-import-not-at-top
  from invariant_slots.datasets import shapes_multiview  # pylint: disable=g-import-not-at-top
  from invariant_slots.registry import ConfigError  # pylint: disable=g-import-not-at-top

  try:
    # The objects' centres come from the embedded data's generator.
    config, model, step, params, dataset, size = cli.load_multiview_run("probe",
                                                                         "shapes_multiview")
  except ConfigError as e:
    cli.fail(str(e))
  ops = preprocessing.build_ops(config.data.preprocess_eval)
  dataset = dataset.take(min(_NUM_SCENES.value, size)).map(
      lambda f: {**ops(f), "scene_name": f["scene_name"]}).batch(8)

  @jax.jit
  def infer(batch):
    outputs = model.apply({"params": params}, batch, train=False,
                          rngs={"slots": jax.random.PRNGKey(0)})
    return outputs["slots"], outputs["positions"], outputs["masks"].argmax(-1)

  options = dict(config.data.shapes_multiview)
  data_config = shapes_multiview.ShapesMultiviewConfig(
      name=local_builder.config_name(options), **options)
  results = {"slots": [], "positions": [], "pred_ids": [], "target_ids": []}
  centres = []
  for batch in dataset.as_numpy_iterator():
    names = [name.decode() for name in batch.pop("scene_name")]
    for key, value in zip(("slots", "positions", "pred_ids"), infer(batch)):
      results[key].append(np.asarray(value))
    results["target_ids"].append(batch["target_ids"])
    for name in names:
      split, index = name.rsplit("_", 1)
      centres.append(shapes_multiview.scene_of(data_config, split, int(index))["centres"])
  stacked = {k: np.concatenate(v) for k, v in results.items()}
  try:
    report = {"step": step, "scenes": len(centres), **probe(**stacked, centres=centres)}
  except ValueError as e:
    cli.fail(str(e))
  output_dir = cli.OUTPUT_DIR.value or os.path.join(cli.WORKDIR.value, "probe")
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "probe.json"), "w") as f:
    json.dump(report, f, indent=2)
  for key, value in report.items():
    print(f"{key:>16}  {value:.3f}" if isinstance(value, float) else f"{key:>16}  {value}")


if __name__ == "__main__":
  cli.use_flags("workdir", "config", "step", "output_dir")
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=cli.parse_flags)
