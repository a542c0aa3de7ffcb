"""Corrector ablations in miniature on the embedded synthetic shapes dataset.

    python benchmarks/corrector_sweep.py --steps=3000 --seeds 0 1 2
    python benchmarks/corrector_sweep.py --sweep=iterations --steps=3000

`--sweep=correctors` trains every registered corrector for the same number of
steps over several seeds and prints FG-ARI and foreground mIoU as mean +- std
(the comparison of Figure 3 of the Inverted-Attention paper).
`--sweep=iterations` trains SA, SA-ID and TF-Inv with N = 1, 3, 5, 8
corrector iterations (its Figures 6 and 9). Each run is a normal training run
of `--config` in `--workdir/<name>`; finished runs are evaluated again, not
retrained, so an interrupted sweep resumes.

Parts of a sweep can run as separate jobs (e.g. one per seed, or one per
machine core), each writing `--json`; `--merge A.json B.json ...` prints the
table of all their runs together:

    python benchmarks/corrector_sweep.py --correctors SA --seeds 1 --json=sa1.json
    python benchmarks/corrector_sweep.py --merge sa0.json sa1.json sa2.json
"""

import argparse
import json
import os
import statistics

from invariant_slots import config_files
from invariant_slots import pipelines
from invariant_slots.lib import trainer
from invariant_slots.modules.correctors import CORRECTORS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(config_path: str, workdir: str, steps: int, seed: int, corrector: str,
        iterations: int, overrides: dict) -> dict[str, float]:
  """Trains one configuration (or re-evaluates it) and returns its eval scalars."""
  config = config_files.load_config(os.path.join(REPO, config_path), **{
      **overrides, "seed": seed, "num_train_steps": steps, "eval_every_steps": steps,
      "checkpoint_every_steps": steps, "model.corrector.name": corrector,
      "model.corrector.num_iterations": iterations})
  run_dir = os.path.join(workdir, f"{corrector}_N{iterations}_seed{seed}")
  pipeline = pipelines.get_pipeline(config)
  scalars = trainer.train_and_evaluate(config, run_dir, pipeline)
  if not scalars:  # Trained to `steps` before: evaluate its last checkpoint.
    config.num_train_steps = 0
    scalars = trainer.train_and_evaluate(config, run_dir, pipeline)
  return scalars


def summarize(values: list[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.3f}"
  return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def merge(paths: list[str]) -> list[dict]:
  """Joins the rows of several `--json` outputs: one row per (corrector, N)."""
  merged: dict[tuple[str, int], dict] = {}
  for path in paths:
    with open(path) as f:
      for row in json.load(f):
        key = (row["corrector"], row["iterations"])
        into = merged.setdefault(key, {"corrector": key[0], "iterations": key[1],
                                       "seeds": [], "fg_ari": [], "fg_miou": []})
        for i, seed in enumerate(row["seeds"]):
          if seed in into["seeds"]:
            raise ValueError(f"{path}: {key[0]} N={key[1]} seed {seed} appears twice.")
          for name in ("seeds", "fg_ari", "fg_miou"):
            into[name].append(row[name][i])
  return list(merged.values())


def print_table(rows: list[dict], title: str) -> None:
  print(f"\n{title}\n")
  print("| corrector | N | seeds | FG-ARI | FG-mIoU |")
  print("|---|---|---|---|---|")
  for row in rows:
    print(f"| {row['corrector']} | {row['iterations']} | {len(row['seeds'])} "
          f"| {summarize(row['fg_ari'])} | {summarize(row['fg_miou'])} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/shapes.py")
  parser.add_argument("--workdir", default="/tmp/corrector_sweep")
  parser.add_argument("--sweep", choices=("correctors", "iterations"), default="correctors")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
  parser.add_argument("--correctors", nargs="*", default=None)
  parser.add_argument("--iterations", type=int, nargs="*", default=[1, 3, 5, 8])
  parser.add_argument("--json", default=None)
  parser.add_argument("--override", nargs="*", default=[],
                      help="dotted config overrides for every run, e.g. warmup_steps=50")
  parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                      help="print the joined table of earlier --json outputs; trains nothing")
  args = parser.parse_args()
  if args.merge:
    rows = merge(args.merge)
    print_table(rows, f"merged from {len(args.merge)} files")
    if args.json:
      with open(args.json, "w") as f:
        json.dump(rows, f, indent=2)
    return
  overrides = {}
  for item in args.override:
    key, value = item.split("=", 1)
    overrides[key] = json.loads(value) if value[:1] in "[{0123456789-" else value
  if args.sweep == "correctors":
    grid = [(c, 3) for c in (args.correctors or CORRECTORS.names)]
  else:
    grid = [(c, n) for c in (args.correctors or ["SA", "SA-ID", "TF-Inv"])
            for n in args.iterations]
  rows = []
  for corrector, iterations in grid:
    results = [run(args.config, args.workdir, args.steps, seed, corrector, iterations,
                   overrides) for seed in args.seeds]
    rows.append({"corrector": corrector, "iterations": iterations, "seeds": args.seeds,
                 "fg_ari": [r["eval/fg_ari"] for r in results],
                 "fg_miou": [r["eval/fg_miou"] for r in results]})
  print_table(rows, f"{args.config}, {args.steps} steps, seeds {args.seeds}, "
                    f"overrides {overrides}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
