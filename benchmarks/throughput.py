"""Train-step throughput and memory of every corrector in every pipeline.

    python benchmarks/throughput.py                      # all pipelines present
    python benchmarks/throughput.py --configs configs/shapes.py --json out.json

For each config and corrector: compile time, the median train-step time over
repeated steps after warm-up (each step waited for with `block_until_ready`),
examples per second, the compiled step's temporary memory
(`compiled.memory_analysis()`) and the process's peak RSS so far. The batch is
one real batch of the config's training data, kept on device. Prints one
markdown table.
"""

import argparse
import json
import os
import resource
import statistics
import time

import jax

from invariant_slots import pipelines
from invariant_slots import config_files
from invariant_slots.lib import evaluator
from invariant_slots.lib import input_pipeline
from invariant_slots.lib import training
from invariant_slots.modules.correctors import CORRECTORS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ("configs/shapes.py", "configs/shapes_video.py",
                   "configs/shapes_multiview.py", "configs/shapes_set_prediction.py")


def measure(config_path: str, corrector: str, steps: int, warmup: int,
            overrides: dict) -> dict:
  """Times the train step of `config_path` with `corrector`."""
  config = config_files.load_config(
      os.path.join(REPO, config_path), **{"model.corrector.name": corrector, **overrides})
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  state = training.init_state(model, tx, pipeline.example_batch(config), config)
  datasets = input_pipeline.create_datasets(config)
  mesh = training.make_mesh(config)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  batch = evaluator.global_batch(next(iter(datasets.train)), sharding)
  step = jax.jit(training.make_train_step(model, tx, config), donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    if i >= warmup:
      times.append(time.perf_counter() - start)
  step_seconds = statistics.median(times)
  return {
      "config": config_path,
      "pipeline": config.get("pipeline", "images"),
      "corrector": corrector,
      "batch_size": config.batch_size,
      "compile_s": compile_seconds,
      "step_ms": 1e3 * step_seconds,
      "examples_per_s": config.batch_size / step_seconds,
      "temp_mib": memory.temp_size_in_bytes / 2**20 if memory else float("nan"),
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", nargs="*", default=None,
                      help="config files (default: the synthetic config of each pipeline "
                      "present)")
  parser.add_argument("--correctors", nargs="*", default=CORRECTORS.names)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--json", default=None, help="also write the rows to this file")
  parser.add_argument("--override", nargs="*", default=[],
                      help="dotted config overrides, e.g. batch_size=8")
  args = parser.parse_args()
  configs = args.configs or [c for c in DEFAULT_CONFIGS if os.path.exists(os.path.join(REPO, c))]
  overrides = {}
  for item in args.override:
    key, value = item.split("=", 1)
    overrides[key] = json.loads(value) if value[:1] in "[{0123456789-" else value
  rows = []
  print(f"{jax.device_count()} x {jax.devices()[0].platform.upper()} device(s), "
        f"{os.cpu_count()} CPU cores\n")
  print("| config | corrector | batch | compile (s) | step (ms) | examples/s | temp memory (MiB) "
        "| peak RSS (MiB) |")
  print("|---|---|---|---|---|---|---|---|")
  for config_path in configs:
    for corrector in args.correctors:
      row = measure(config_path, corrector, args.steps, args.warmup, overrides)
      rows.append(row)
      print(f"| {row['config']} | {corrector} | {row['batch_size']} | {row['compile_s']:.1f} "
            f"| {row['step_ms']:.1f} | {row['examples_per_s']:.1f} | {row['temp_mib']:.1f} "
            f"| {row['peak_rss_mib']:.0f} |", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
