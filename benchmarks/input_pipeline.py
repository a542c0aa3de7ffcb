"""Input-pipeline overhead: the train loop on real data vs the same step on one batch.

    python benchmarks/input_pipeline.py --config=configs/shapes.py --steps=300

Loop A is what the trainer does each step: take the next batch from the
tf.data pipeline (parallel map, prefetch), assemble the global device batch and
run the jitted step. Loop B runs the same compiled step on a fixed batch that
already lives on the device. Both dispatch asynchronously and wait only at the
end, as the trainer does between log steps. Overhead = A / B - 1.
"""

import argparse
import os
import time

import jax

from invariant_slots import pipelines
from invariant_slots import config_files
from invariant_slots.lib import evaluator
from invariant_slots.lib import input_pipeline
from invariant_slots.lib import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/shapes.py")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  config = config_files.load_config(os.path.join(REPO, args.config))
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  state = training.init_state(model, tx, pipeline.example_batch(config), config)
  mesh = training.make_mesh(config)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  train_iter = iter(input_pipeline.create_datasets(config).train)
  fixed = evaluator.global_batch(next(train_iter), sharding)
  step = jax.jit(training.make_train_step(model, tx, config), donate_argnums=(0,))
  state, metrics = step(state, fixed)  # Compile.
  jax.block_until_ready(metrics)

  def real_data_loop(state):
    for _ in range(args.steps):
      state, metrics = step(state, evaluator.global_batch(next(train_iter), sharding))
    jax.block_until_ready(metrics)
    return state

  def fixed_batch_loop(state):
    for _ in range(args.steps):
      state, metrics = step(state, fixed)
    jax.block_until_ready(metrics)
    return state

  results = {"real data": [], "fixed device batch": []}
  for _ in range(args.rounds):  # Interleaved, so both see the same machine load.
    for name, loop in (("real data", real_data_loop), ("fixed device batch", fixed_batch_loop)):
      start = time.perf_counter()
      state = loop(state)
      results[name].append((time.perf_counter() - start) / args.steps)
  best = {name: min(times) for name, times in results.items()}
  print(f"{args.config}: batch {config.batch_size}, {args.steps} steps x {args.rounds} rounds, "
        f"{os.cpu_count()} CPU cores\n")
  print("| loop | best ms/step | all rounds (ms/step) |")
  print("|---|---|---|")
  for name, times in results.items():
    print(f"| {name} | {1e3 * best[name]:.2f} | "
          f"{', '.join(f'{1e3 * t:.2f}' for t in times)} |")
  overhead = best["real data"] / best["fixed device batch"] - 1.0
  print(f"\ninput-pipeline overhead: {100 * overhead:+.1f}%")


if __name__ == "__main__":
  main()
