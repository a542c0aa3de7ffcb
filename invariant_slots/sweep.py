"""Runs one config over seeds (and a grid of overrides) as ordinary resumable runs.

    python -m invariant_slots.sweep --config=configs/shapes.py --workdir=/tmp/sweep \
        --seeds=0,1,2 --grid=model.corrector.name=SA,SA-ID --config.num_train_steps=1500
    python -m invariant_slots.report /tmp/sweep

`--workdir` (the sweep's ROOT) defaults to `sweeps/<config name>` in the
current directory.

Every combination of the grid's values and the seeds is a run of
`invariant_slots.main` in `ROOT/<group>/seed<s>` (the group names the grid
values, "base" without a grid), with the sweep's `--config.KEY=VALUE`
overrides. A run whose latest checkpoint has reached `num_train_steps` is left
as it is, so interrupting and rerunning the sweep picks up where it stopped.
Runs go one after another here, or each to `--launcher` (a command that takes
`CONFIG WORKDIR [overrides]`, such as `"launch/local.sh 2"` or
`"launch/tpu_pod.sh --name N --zone Z --type v4-32"`), with up to
`--parallel` at a time. `ROOT/summary.json` lists every run, its status and
its last eval scalars.
"""

import dataclasses
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Sequence

from absl import app
from absl import flags

from invariant_slots import cli
from invariant_slots.lib import validation
from invariant_slots.registry import ConfigError

_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds, one run each.")
_GRID = flags.DEFINE_multi_string(
    "grid", [], "KEY=V1,V2,...: a config key and its values; repeat for a product.")
_LAUNCHER = flags.DEFINE_string(
    "launcher", None, "Command that starts one run given CONFIG WORKDIR [overrides]; "
    "default: python -m invariant_slots.main in this process's environment.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs started at once.")


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run of the sweep: where it goes and the overrides that make it."""

  group: str
  seed: int
  overrides: tuple[tuple[str, str], ...]

  @property
  def name(self) -> str:
    return f"{self.group}/seed{self.seed}"


def parse_grid(entries: Sequence[str]) -> list[tuple[str, list[str]]]:
  """`["a.b=1,2", ...]` -> `[("a.b", ["1", "2"]), ...]`; one line on a malformed entry."""
  grid = []
  for entry in entries:
    key, _, values = entry.partition("=")
    if not key or not values:
      raise ConfigError(f"--grid={entry!r} is not KEY=V1,V2,...; for example "
                        "--grid=model.corrector.name=SA,SA-ID.")
    grid.append((key, values.split(",")))
  return grid


def run_specs(seeds: Sequence[int], grid: Sequence[tuple[str, list[str]]]) -> list[RunSpec]:
  """Every combination of the grid's values (in order) with every seed."""
  specs = []
  for values in itertools.product(*(v for _, v in grid)):
    pairs = tuple(zip((k for k, _ in grid), values))
    group = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in pairs) or "base"
    specs += [RunSpec(group, seed, pairs + (("seed", str(seed)),)) for seed in seeds]
  return specs


def command(spec: RunSpec, config_path: str, workdir: str, overrides: Sequence[str],
            launcher: str | None) -> list[str]:
  """The command line that trains `spec`."""
  flags_ = list(overrides) + [f"--config.{k}={v}" for k, v in spec.overrides]
  if launcher:
    return shlex.split(launcher) + [config_path, workdir] + flags_
  return [sys.executable, "-m", "invariant_slots.main", f"--config={config_path}",
          f"--workdir={workdir}"] + flags_


def is_finished(workdir: str, num_train_steps: int) -> bool:
  steps = validation.checkpoint_steps(workdir)
  return bool(steps) and steps[-1] >= num_train_steps


def last_eval(workdir: str) -> dict[str, float]:
  """The last value of every eval scalar in `workdir`'s events (empty without events)."""
  from invariant_slots import report  # pylint: disable=g-import-not-at-top
  try:
    run = report.read_run(workdir)
  except ConfigError:
    return {}
  return {tag: float(values[-1]) for tag, (_, values) in run.scalars.items()
          if tag.startswith("eval/")}


def sweep(config_path: str, root: str, num_train_steps: int, seeds: Sequence[int],
          grid: Sequence[tuple[str, list[str]]], overrides: Sequence[str],
          launcher: str | None = None, parallel: int = 1) -> dict:
  """Runs (or resumes) every run of the sweep; returns and writes `ROOT/summary.json`."""
  specs = run_specs(seeds, grid)
  os.makedirs(root, exist_ok=True)
  status: dict[str, dict] = {}
  pending = []
  for spec in specs:
    workdir = os.path.join(root, spec.name)
    if is_finished(workdir, num_train_steps):
      print(f"{spec.name}: finished before, left as it is.", flush=True)
      status[spec.name] = {"status": "finished before"}
    else:
      pending.append(spec)
  running: list[tuple[RunSpec, subprocess.Popen, float, object]] = []
  while pending or running:
    while pending and len(running) < max(parallel, 1):
      spec = pending.pop(0)
      workdir = os.path.join(root, spec.name)
      os.makedirs(workdir, exist_ok=True)
      log = open(os.path.join(workdir, "sweep.log"), "a")  # pylint: disable=consider-using-with
      argv = command(spec, config_path, workdir, overrides, launcher)
      print(f"{spec.name}: {shlex.join(argv)}", flush=True)
      running.append((spec, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT),
                      time.time(), log))
    for item in list(running):
      spec, process, start, log = item
      if process.poll() is None:
        continue
      log.close()
      running.remove(item)
      ok = process.returncode == 0
      status[spec.name] = {"status": "trained" if ok else f"failed (exit {process.returncode}, "
                           f"see {os.path.join(root, spec.name, 'sweep.log')})",
                           "seconds": round(time.time() - start, 1)}
      print(f"{spec.name}: {status[spec.name]['status']}", flush=True)
    time.sleep(0.5)
  summary = {"config": config_path, "overrides": list(overrides), "seeds": list(seeds),
             "grid": {k: v for k, v in grid}, "runs": []}
  for spec in specs:
    workdir = os.path.join(root, spec.name)
    steps = validation.checkpoint_steps(workdir)
    summary["runs"].append({
        "name": spec.name, "group": spec.group, "seed": spec.seed,
        "overrides": dict(spec.overrides), "workdir": workdir,
        "step": steps[-1] if steps else 0, **status[spec.name],
        "eval": last_eval(workdir)})
  with open(os.path.join(root, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
  config_path = cli.config_path(sys.argv)
  root = cli.WORKDIR.value or os.path.join(
      "sweeps", os.path.splitext(os.path.basename(config_path.split(":", 1)[0]))[0])
  overrides = [arg for arg in sys.argv[1:] if arg.startswith("--config.")]
  try:
    seeds = [int(seed) for seed in _SEEDS.value]
  except ValueError:
    cli.fail(f"--seeds={','.join(_SEEDS.value)} must be integers, e.g. --seeds=0,1,2.")
  try:
    grid = parse_grid(_GRID.value)
    config = cli.CONFIG.value
    for key, _ in grid:
      validation.check_overrides(config, [key])
    validation.check_values(config)
  except ConfigError as e:
    cli.fail(str(e))
  summary = sweep(config_path, root, config.num_train_steps, seeds, grid, overrides,
                  _LAUNCHER.value, _PARALLEL.value)
  failed = [run["name"] for run in summary["runs"] if run["status"].startswith("failed")]
  print(f"Wrote {os.path.join(root, 'summary.json')}; report with: "
        f"python -m invariant_slots.report {root}")
  if failed:
    cli.fail(f"{len(failed)} of {len(summary['runs'])} runs failed: {', '.join(failed)}.", 1)


if __name__ == "__main__":
  cli.use_flags("config", "workdir")
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.parse_flags)
