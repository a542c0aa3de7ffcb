"""The forms of a stride-1 convolution's weight gradient on XLA:CPU, layer by layer.

    python benchmarks/weight_gradient_forms.py            # the 128x128 model's layers

For each stride-1 convolution that the 128x128 object-discovery model of
`benchmarks/compare_torch.py` runs (the encoder's 5x5 layers, the 3x3
polyphase forms of the decoder's stride-2 transposed convolutions, its 5x5
layer at 128x128), times the weight gradient alone: XLA's own (the transpose
of `lax.conv_general_dilated`) and `modules/convolution.blocked_weight_gradient`
with blocks of `bh x bw` pixels (1: one product per tap; `1x4`, 4 pixels
of a row, is what `Conv` takes for 5x5 kernels), with the largest relative
difference from XLA's. `--products` first times XLA:CPU's matrix
product `A^T B` on the shapes these forms produce.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from conv_transpose import timed

from invariant_slots.modules import convolution

# name, maps (batch x slots), size, in, out, kernel.
LAYERS = (
    ("encoder, 5x5", 8, 128, 64, 64, 5),
    ("decoder 16 -> 32, polyphase 3x3", 56, 16, 64, 256, 3),
    ("decoder 32 -> 64, polyphase 3x3", 56, 32, 64, 256, 3),
    ("decoder 64 -> 128, polyphase 3x3", 56, 64, 64, 256, 3),
    ("decoder 128x128, 5x5", 56, 128, 64, 64, 5),
    ("decoder readout, 3x3", 56, 128, 64, 4, 3),
)


def median_ms(function, *args, repeats: int) -> float:
  return 1e3 * timed(function, *args, repeats=repeats)


# [positions, m]^T [positions, n]: per tap of a 64 -> 64 layer, per 2x2 and
# 4x4 block offset of it, and per tap of the polyphase 64 -> 256 layer.
PRODUCTS = ((131072, 64, 64), (32768, 256, 256), (8192, 1024, 1024), (229376, 256, 256),
            (229376, 64, 256))


def print_products(rng: np.random.Generator, repeats: int) -> None:
  """A table of XLA:CPU's `A^T B` speed over `PRODUCTS`."""
  print("| positions x m, positions x n | ms | GFLOP/s |")
  print("|---|---|---|")
  for positions, m, n in PRODUCTS:
    a = jnp.asarray(rng.standard_normal((positions, m)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((positions, n)), jnp.float32)
    milliseconds = median_ms(jax.jit(lambda a, b: a.T @ b), a, b, repeats=repeats)
    print(f"| {positions} x {m}, {positions} x {n} | {milliseconds:.1f} | "
          f"{2e-6 * positions * m * n / milliseconds:.0f} |", flush=True)
  print()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--blocks", nargs="+", default=["1", "1x2", "1x4", "2x2", "4x4"],
                      help="block sides, `s` or `bhxbw`")
  parser.add_argument("--layers", nargs="*", help="only layers whose name contains one of these")
  parser.add_argument("--products", action="store_true",
                      help="first time the matrix products alone")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  if args.products:
    print_products(rng, args.repeats)
  print(f"{jax.device_count()} CPU device(s); weight gradient alone, median of "
        f"{args.repeats}\n")
  print("| layer | XLA (ms) | " + " | ".join(f"block {b} (ms)" for b in args.blocks)
        + " | largest relative difference |")
  print("|---|---|" + "---|" * len(args.blocks) + "---|")
  for name, maps, size, in_features, out_features, kernel in LAYERS:
    if args.layers and not any(part in name for part in args.layers):
      continue
    x = jnp.asarray(rng.standard_normal((maps, size, size, in_features)), jnp.float32)
    grad = jnp.asarray(rng.standard_normal((maps, size, size, out_features)), jnp.float32)
    padding = ((kernel // 2,) * 2,) * 2
    kernel_shape = (kernel, kernel, in_features, out_features)
    xla = jax.jit(lambda x, g: jax.linear_transpose(  # pylint: disable=g-long-lambda
        lambda w: convolution.lax_conv(x, w, (1, 1), padding),
        jnp.zeros(kernel_shape))(g)[0])
    reference = xla(x, grad)
    row = [median_ms(xla, x, grad, repeats=args.repeats)]
    difference = 0.0
    for block in args.blocks:
      block = tuple(int(side) for side in block.split("x")) if "x" in block else int(block)
      blocked = jax.jit(lambda x, g, b=block: convolution.blocked_weight_gradient(
          x, g, (kernel, kernel), padding, b))
      difference = max(difference, float(jnp.max(jnp.abs(blocked(x, grad) - reference))
                                         / jnp.max(jnp.abs(reference))))
      row.append(median_ms(blocked, x, grad, repeats=args.repeats))
    print(f"| {name} ({maps} x {size}x{size}, {in_features} -> {out_features}) | "
          + " | ".join(f"{t:.0f}" for t in row) + f" | {difference:.1e} |", flush=True)


if __name__ == "__main__":
  main()
