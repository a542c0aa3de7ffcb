"""Temporary memory and step time of the compiled train step: SA vs SA-ID over N.

SA backpropagates through all N iterations, so its activation memory grows with
N; SA-ID differentiates only the last iteration and stays flat.

    python benchmarks/implicit_memory.py [--iterations 1 3 8] [--batch_size 16]
"""

import argparse
import os
import statistics
import time

import jax
import numpy as np

from invariant_slots import pipelines
from invariant_slots.lib import config_defaults
from invariant_slots.lib import trainer

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "configs", "shapes.py")


def measure(corrector: str, iterations: int, batch_size: int, repeats: int) -> dict[str, float]:
  config = config_defaults.load_config(CONFIG, **{
      "model.corrector.name": corrector, "model.corrector.num_iterations": iterations,
      "batch_size": batch_size})
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = trainer.make_optimizer(config)
  state = trainer.init_state(model, tx, pipeline.example_batch(config), config)
  height, width = config.data.resolution
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((batch_size, height, width, 3), dtype=np.float32)}
  step = jax.jit(trainer.make_train_step(model, tx, config))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  return {"temp_mib": memory.temp_size_in_bytes / 2**20, "compile_s": compile_seconds,
          "step_ms": 1000 * statistics.median(times[1:])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iterations", type=int, nargs="+", default=[1, 3, 8])
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print(f"configs/shapes.py model, batch {args.batch_size}, {jax.devices()[0].platform}\n")
  print("| corrector | N | temp memory (MiB) | step (ms) | compile (s) |")
  print("|---|---|---|---|---|")
  for corrector in ("SA", "SA-ID"):
    for iterations in args.iterations:
      r = measure(corrector, iterations, args.batch_size, args.repeats)
      print(f"| {corrector} | {iterations} | {r['temp_mib']:.1f} | {r['step_ms']:.1f} | "
            f"{r['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
  main()
