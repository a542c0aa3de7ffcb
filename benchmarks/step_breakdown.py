"""Where the 128x128 object-discovery train step spends its time, part by part.

    pip install -e ".[bench]"
    python benchmarks/step_breakdown.py          # batch 8, K=7, T=3, 128x128

Times the forward and backward pass (gradients with respect to the
parameters and the part's input) of the encoder, of Slot Attention and of the
spatial-broadcast decoder on their own, in both frameworks, on the model of
`benchmarks/compare_torch.py` (`configs/clevr.py` with 7 slots). Each part's
loss is the sum of its outputs. The parts run in turns (ours, PyTorch, ...)
and the table reports medians; the whole step adds the optimiser and the
loss, which are small.
"""

import argparse
import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

import torch_reference
from invariant_slots import config_files
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.modules.decoders import DECODERS
from invariant_slots.modules.encoders import ENCODERS

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "configs", "clevr.py")


def jax_part(module, *inputs) -> Callable[[], None]:
  """`run()`: one jitted forward + backward pass of `module` on `inputs` (blocking)."""
  params = module.init(jax.random.PRNGKey(0), *inputs)

  def loss(params, *inputs):
    outputs = module.apply(params, *inputs)
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(outputs))

  grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(inputs) + 1))))
  return lambda: jax.block_until_ready(grad(params, *inputs))


def torch_part(module: torch.nn.Module, *inputs: torch.Tensor) -> Callable[[], None]:
  """`run()`: one forward + backward pass of `module` on `inputs`."""
  inputs = [x.clone().requires_grad_(True) for x in inputs]

  def run() -> None:
    module.zero_grad(set_to_none=True)
    outputs = module(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    sum(out.sum() for out in outputs).backward()

  return run


def median_seconds(run: Callable[[], None], rounds: int) -> float:
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--num_slots", type=int, default=7)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  batch, res, num_slots = args.batch_size, args.resolution, args.num_slots
  config_files.load_config(CONFIG)  # Makes `configs` importable.
  from configs import common  # pylint: disable=g-import-not-at-top
  model = common.slot_attention_model(num_slots, res)
  rng = np.random.default_rng(0)
  image = rng.random((batch, res, res, 3), dtype=np.float32)
  tokens = rng.standard_normal((batch, res * res, 64), dtype=np.float32)
  slots = rng.standard_normal((batch, num_slots, 64), dtype=np.float32)

  reference = torch_reference.ObjectDiscovery(resolution=res, num_slots=num_slots)
  corrector = CORRECTORS.build(model.corrector, slot_size=model.slot_size)
  initial = jnp.asarray(slots)
  parts = {
      "encoder": (jax_part(ENCODERS.build(model.encoder), jnp.asarray(image)),
                  torch_part(reference.encoder, torch.from_numpy(image).permute(0, 3, 1, 2))),
      "Slot Attention (T=3)": (
          jax_part(corrector, initial, jnp.asarray(tokens)),
          torch_part(reference.slot_attention, torch.from_numpy(tokens))),
      "decoder": (jax_part(DECODERS.build(model.decoder), jnp.asarray(slots)),
                  torch_part(reference.decoder, torch.from_numpy(slots))),
  }
  print(f"batch {batch}, {res}x{res}, K={num_slots}; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; forward + backward, median of {args.rounds}\n")
  print("| part | ours (ms) | PyTorch (ms) | ours / PyTorch |")
  print("|---|---|---|---|")
  totals = [0.0, 0.0]
  for name, (ours, theirs) in parts.items():
    ours(), theirs()  # Compile and warm up.
    times = [median_seconds(ours, args.rounds), median_seconds(theirs, args.rounds)]
    totals = [a + b for a, b in zip(totals, times)]
    print(f"| {name} | {1e3 * times[0]:.0f} | {1e3 * times[1]:.0f} | {times[0] / times[1]:.2f} |",
          flush=True)
  print(f"| sum | {1e3 * totals[0]:.0f} | {1e3 * totals[1]:.0f} | {totals[0] / totals[1]:.2f} |")


if __name__ == "__main__":
  main()
