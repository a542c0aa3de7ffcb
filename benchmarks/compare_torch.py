"""Times our train step against the plain PyTorch reference, alternately, in one run.

    pip install -e ".[bench]"
    python benchmarks/compare_torch.py            # 128x128, K=7, T=3, batch 8
    python benchmarks/compare_torch.py --torch_compile   # + torch.compile's step

Both steps train the same architecture (`configs/clevr.py` with 7 slots, see
`benchmarks/torch_reference.py`) with Adam on the same random batch. The two
steps run in turns (JAX, PyTorch, JAX, ...) so that both see the same machine
load; the table reports medians over the timed rounds after warm-up.
"""

import argparse
import os
import statistics
import time

import torch
# Adam imports torch._dynamo on first use; with TensorFlow loaded first that
# import crashes torch 2.14, so it is loaded here, first.
import torch._dynamo  # noqa: F401  pylint: disable=unused-import
import jax
import numpy as np

import torch_reference
from invariant_slots import config_files
from invariant_slots import pipelines
from invariant_slots.lib import training

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "configs", "clevr.py")


def jax_step(batch_size: int, resolution: int, num_slots: int, dtype: str):
  """Returns `run()` doing one jitted train step of our model (blocking)."""
  config = config_files.load_config(CONFIG, **{
      "batch_size": batch_size, "model.num_slots": num_slots,
      "data.resolution": (resolution, resolution)})
  from configs import common  # pylint: disable=g-import-not-at-top  (importable once a config loaded)
  config.model = common.slot_attention_model(num_slots, resolution)
  if dtype != "float32":
    config.dtype = dtype
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  state = training.init_state(model, tx, pipeline.example_batch(config), config)
  image = np.random.default_rng(0).random((batch_size, resolution, resolution, 3),
                                          dtype=np.float32)
  batch = {"image": jax.device_put(image)}
  step = jax.jit(training.make_train_step(model, tx, config), donate_argnums=(0,))
  holder = {"state": state}

  def run() -> None:
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)

  return run


def torch_step(batch_size: int, resolution: int, num_slots: int, compiled: bool = False):
  """Returns `run()` doing one PyTorch train step of the reference model
  (its forward and backward pass compiled by `torch.compile` if `compiled`)."""
  torch.manual_seed(0)
  model = torch_reference.ObjectDiscovery(resolution=resolution, num_slots=num_slots)
  step = torch_reference.make_train_step(model, forward=torch.compile(model) if compiled else None)
  image = torch.rand(batch_size, 3, resolution, resolution)
  return lambda: step(image)


def timed(run) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--num_slots", type=int, default=7)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--dtype", default="float32", help="our compute dtype")
  parser.add_argument("--torch_compile", action="store_true",
                      help="add a peer: the PyTorch reference under torch.compile")
  args = parser.parse_args()

  steps = {"invariant_slots (JAX, " + args.dtype + ")": jax_step(
      args.batch_size, args.resolution, args.num_slots, args.dtype),
           "PyTorch reference": torch_step(args.batch_size, args.resolution, args.num_slots)}
  if args.torch_compile:
    steps["PyTorch reference, torch.compile"] = torch_step(
        args.batch_size, args.resolution, args.num_slots, compiled=True)
  first_seconds = {name: timed(run) for name, run in steps.items()}
  for _ in range(args.warmup):
    for run in steps.values():
      run()
  times = {name: [] for name in steps}
  for _ in range(args.rounds):  # In turns, so that all see the same machine load.
    for name, run in steps.items():
      times[name].append(timed(run))
  ours_name, reference_name = list(steps)[:2]
  ours_median = statistics.median(times[ours_name])
  print(f"{jax.device_count()} JAX CPU device(s), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; batch {args.batch_size}, "
        f"{args.resolution}x{args.resolution}, K={args.num_slots}, T=3; "
        f"first step (compiles) {first_seconds[ours_name]:.1f} s\n")
  print("| implementation | first step (s) | median step (ms) | min (ms) | max (ms) "
        "| ours / this |")
  print("|---|---|---|---|---|---|")
  for name, seconds in times.items():
    median = statistics.median(seconds)
    print(f"| {name} | {first_seconds[name]:.1f} | {1e3 * median:.0f} "
          f"| {1e3 * min(seconds):.0f} | {1e3 * max(seconds):.0f} | {ours_median / median:.2f} |")
  print(f"\nratio ours / PyTorch: {ours_median / statistics.median(times[reference_name]):.2f}")


if __name__ == "__main__":
  main()
