"""Where the slots of a multi-view run put the objects in 3D.

    python -m invariant_slots.probe --workdir=/tmp/mv

For runs on the embedded `shapes_multiview` data, whose object centres the
generator knows. Loads the run's config (or `--config`) and its newest
readable checkpoint (or `--step`), infers the slots of the first
`--probe_scenes` eval scenes and takes, for each object seen in the held-out
views, the slot that covers most of its pixels there. Reports, in scene
units (objects have radii 0.5-0.9 in an arena of side 4.4):

* `position_error`: the mean distance from that slot's 3D point (`positions`,
  triangulated from its attention) to the object's centre;
* `probe_error`: the same for a linear map (ridge regression) from the slot
  vector to the centre, fitted on the first half of the scenes and tested on
  the second (the penalty chosen from `slot_probe.RIDGES` by two-fold
  cross-validation on the first half);
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
from invariant_slots.lib import slot_probe

_NUM_SCENES = flags.DEFINE_integer("probe_scenes", 64, "Eval scenes to probe.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _NUM_SCENES.value < 4:
    cli.fail(f"--probe_scenes={_NUM_SCENES.value}: the probe needs at least 4 scenes.")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax  # pylint: disable=g-import-not-at-top
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
  results = {"slots": [], "positions": [], "pred_ids": [], "target_ids": []}
  centres = []
  for batch in dataset.as_numpy_iterator():
    names = batch.pop("scene_name")
    for key, value in zip(("slots", "positions", "pred_ids"), infer(batch)):
      results[key].append(np.asarray(value))
    results["target_ids"].append(batch["target_ids"])
    centres.extend(shapes_multiview.scene_named(options, name)["centres"] for name in names)
  stacked = {k: np.concatenate(v) for k, v in results.items()}
  try:
    report = {"step": step, "scenes": len(centres), **slot_probe.probe(**stacked, centres=centres)}
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
