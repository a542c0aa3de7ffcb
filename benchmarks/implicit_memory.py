"""Temporary memory and step time of the compiled train step: SA vs SA-ID over N.

SA backpropagates through all N iterations, so its activation memory grows with
N; SA-ID differentiates only the last iteration and stays flat.

    python benchmarks/implicit_memory.py [--iterations 1 3 8] [--batch_size 16]

Two tables: the whole `configs/shapes.py` train step (where the decoder's
activations dominate), and the corrector alone (gradient of a loss on its
output slots with respect to its parameters and the inputs, `--num_inputs`
features of size 64, 7 slots), where the iterations are all there is.
"""

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from invariant_slots import pipelines
from invariant_slots import config_files
from invariant_slots.lib import training
from invariant_slots.modules.correctors import CORRECTORS

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "configs", "shapes.py")


def measure(corrector: str, iterations: int, batch_size: int, repeats: int) -> dict[str, float]:
  config = config_files.load_config(CONFIG, **{
      "model.corrector.name": corrector, "model.corrector.num_iterations": iterations,
      "batch_size": batch_size})
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  state = training.init_state(model, tx, pipeline.example_batch(config), config)
  height, width = config.data.resolution
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((batch_size, height, width, 3), dtype=np.float32)}
  step = jax.jit(training.make_train_step(model, tx, config))
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


def measure_corrector(corrector: str, iterations: int, batch_size: int, num_inputs: int,
                      repeats: int) -> dict[str, float]:
  """The corrector's forward and backward pass on random slots and inputs."""
  module = CORRECTORS.build(
      {"name": corrector, "num_iterations": iterations, "mlp_size": 128}, slot_size=64)
  rng = np.random.default_rng(0)
  slots = jnp.asarray(rng.normal(size=(batch_size, 7, 64)), jnp.float32)
  inputs = jnp.asarray(rng.normal(size=(batch_size, num_inputs, 64)), jnp.float32)
  params = module.init(jax.random.key(0), slots, inputs)

  def loss(params, inputs):
    new_slots, _ = module.apply(params, slots, inputs, train=True)
    return jnp.mean(new_slots ** 2)

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  compiled = step.lower(params, inputs).compile()
  memory = compiled.memory_analysis()
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, inputs))
    times.append(time.perf_counter() - start)
  return {"temp_mib": memory.temp_size_in_bytes / 2**20,
          "step_ms": 1000 * statistics.median(times[1:])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iterations", type=int, nargs="+", default=[1, 3, 8])
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--num_inputs", type=int, default=1024, help="corrector-alone table")
  args = parser.parse_args()
  print(f"configs/shapes.py model, batch {args.batch_size}, {jax.devices()[0].platform}\n")
  print("| corrector | N | temp memory (MiB) | step (ms) | compile (s) |")
  print("|---|---|---|---|---|")
  for corrector in ("SA", "SA-ID"):
    for iterations in args.iterations:
      r = measure(corrector, iterations, args.batch_size, args.repeats)
      print(f"| {corrector} | {iterations} | {r['temp_mib']:.1f} | {r['step_ms']:.1f} | "
            f"{r['compile_s']:.1f} |", flush=True)

  print(f"\ncorrector alone: batch {args.batch_size}, 7 slots of 64, "
        f"{args.num_inputs} inputs of 64, gradient w.r.t. parameters and inputs\n")
  print("| corrector | N | temp memory (MiB) | forward + backward (ms) |")
  print("|---|---|---|---|")
  for corrector in ("SA", "SA-ID"):
    for iterations in args.iterations:
      r = measure_corrector(corrector, iterations, args.batch_size, args.num_inputs,
                            args.repeats)
      print(f"| {corrector} | {iterations} | {r['temp_mib']:.1f} | {r['step_ms']:.1f} |",
            flush=True)


if __name__ == "__main__":
  main()
