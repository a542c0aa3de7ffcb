"""Polyphase vs XLA transposed convolution, per decoder layer, forward and backward.

    python benchmarks/conv_transpose.py            # the configs/clevr.py decoder, batch 8, K=7

Each stride-2 layer of the 128x128 spatial-broadcast decoder (5x5 kernels, 64
channels, batch x slots maps) is timed with `implementation="polyphase"` and
`"lax"` (flax's `nn.ConvTranspose` path): the forward pass, and the gradient
with respect to inputs and kernel. Medians of repeated calls after warm-up.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from invariant_slots.modules.convolution import ConvTranspose


def timed(function, *args, repeats: int) -> float:
  jax.block_until_ready(function(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--maps", type=int, default=56, help="batch x slots")
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--sizes", type=int, nargs="*", default=[8, 16, 32, 64])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print(f"{args.maps} maps x {args.channels} channels, 5x5 kernel, stride 2, "
        f"{jax.device_count()} CPU device(s)\n")
  print("| input -> output | pass | polyphase (ms) | lax (ms) | lax / polyphase |")
  print("|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for size in args.sizes:
    x = jnp.asarray(rng.standard_normal((args.maps, size, size, args.channels)), jnp.float32)
    results = {}
    for impl in ("polyphase", "lax"):
      layer = ConvTranspose(args.channels, (5, 5), (2, 2), implementation=impl)
      params = layer.init(jax.random.key(0), x)
      forward = jax.jit(lambda p, x, layer=layer: layer.apply(p, x))
      backward = jax.jit(jax.grad(lambda p, x, layer=layer: jnp.sum(layer.apply(p, x) ** 2),
                                  argnums=(0, 1)))
      results[impl] = (timed(forward, params, x, repeats=args.repeats),
                       timed(backward, params, x, repeats=args.repeats))
    for index, name in enumerate(("forward", "backward")):
      poly, lax = results["polyphase"][index], results["lax"][index]
      print(f"| {size} -> {2 * size} | {name} | {1e3 * poly:.1f} | {1e3 * lax:.1f} "
            f"| {lax / poly:.1f}x |", flush=True)


if __name__ == "__main__":
  main()
