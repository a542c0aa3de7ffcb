"""Times our train step against the plain PyTorch reference, alternately, in one run.

    pip install -e ".[bench]"
    python benchmarks/compare_torch.py            # 128x128, K=7, T=3, batch 8

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


def torch_step(batch_size: int, resolution: int, num_slots: int):
  """Returns `run()` doing one PyTorch train step of the reference model."""
  torch.manual_seed(0)
  model = torch_reference.ObjectDiscovery(resolution=resolution, num_slots=num_slots)
  step = torch_reference.make_train_step(model)
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
  args = parser.parse_args()

  ours = jax_step(args.batch_size, args.resolution, args.num_slots, args.dtype)
  reference = torch_step(args.batch_size, args.resolution, args.num_slots)
  compile_seconds = timed(ours)
  for _ in range(args.warmup):
    ours()
    reference()
  ours_times, reference_times = [], []
  for _ in range(args.rounds):
    ours_times.append(timed(ours))
    reference_times.append(timed(reference))
  ours_median = statistics.median(ours_times)
  reference_median = statistics.median(reference_times)
  print(f"{jax.device_count()} JAX CPU device(s), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; batch {args.batch_size}, "
        f"{args.resolution}x{args.resolution}, K={args.num_slots}, T=3; "
        f"first JAX step (compile) {compile_seconds:.1f} s\n")
  print("| implementation | median step (ms) | min (ms) | max (ms) |")
  print("|---|---|---|---|")
  for name, times in (("invariant_slots (JAX, " + args.dtype + ")", ours_times),
                      ("PyTorch reference", reference_times)):
    print(f"| {name} | {1e3 * statistics.median(times):.0f} | {1e3 * min(times):.0f} "
          f"| {1e3 * max(times):.0f} |")
  print(f"\nratio ours / PyTorch: {ours_median / reference_median:.2f}")


if __name__ == "__main__":
  main()
