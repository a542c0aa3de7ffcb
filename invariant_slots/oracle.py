"""Decoder capacity: train a multi-view decoder on oracle slots of the true objects.

    python -m invariant_slots.oracle --config=configs/shapes_multiview.py --output_dir=/tmp/oracle

For multi-view configs on the embedded `shapes_multiview` data. The encoder
and the corrector are bypassed: each slot is a learned embedding of one
object's true centre, size, colour and kind, plus a background slot
(`lib/oracle_slots.py`); the config's decoder renders the held-out views from
them and is trained on the config's target rays, optimiser and schedule for
`num_train_steps`. Every `eval_every_steps` it prints novel-view PSNR, ARI,
FG-ARI and FG-mIoU over the eval scenes, as training does; the curve goes to
`OUTPUT_DIR/oracle.json`. A decoder that cannot render the scenes from their
true objects cannot be expected to learn them from inferred slots.
"""

import json
import os

from absl import app
from absl import flags

from invariant_slots import cli


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = cli.CONFIG.value
  if config.get("pipeline") != "multiview" or config.data.source != "shapes_multiview":
    cli.fail("The oracle needs a multiview config on data.source 'shapes_multiview', got "
             f"pipeline {config.get('pipeline')!r} on {config.data.source!r}.")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from invariant_slots.lib import oracle_slots  # pylint: disable=g-import-not-at-top
  from invariant_slots.registry import ConfigError  # pylint: disable=g-import-not-at-top

  def report(step, scalars):
    print(f"step {step:>6}  " + "  ".join(f"{k} {v:.4f}" for k, v in scalars.items()),
          flush=True)

  try:
    evaluations = oracle_slots.train_and_evaluate(config, report)
  except (ConfigError, ValueError) as e:
    cli.fail(str(e))
  os.makedirs(cli.OUTPUT_DIR.value, exist_ok=True)
  with open(os.path.join(cli.OUTPUT_DIR.value, "oracle.json"), "w") as f:
    json.dump([{"step": step, **scalars} for step, scalars in evaluations], f, indent=2)


if __name__ == "__main__":
  cli.use_flags("config", "output_dir")
  flags.mark_flags_as_required(["config", "output_dir"])
  app.run(main, flags_parser=cli.parse_flags)
