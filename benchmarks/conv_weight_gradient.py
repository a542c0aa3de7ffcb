"""Where a convolution's backward pass spends its time on XLA:CPU.

    python benchmarks/conv_weight_gradient.py          # 56 maps of 32x32x64

For the stride-1 convolutions that the decoder runs (the 3x3, 64 -> 4*64
polyphase form of a 5x5 stride-2 transposed convolution, and a 5x5 64 -> 64
convolution), times the forward pass, forward + input gradient and forward +
weight gradient with XLA's convolution, and forward + weight gradient computed
instead as one matrix product per kernel tap (`modules/convolution.tap_conv`,
the form `Conv` uses on CPU), which gives the same numbers.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from conv_transpose import timed

from invariant_slots.modules import convolution


def conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """XLA's convolution (stride 1, SAME)."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=convolution.DIMENSIONS)


def conv_tap_gradient(x: jax.Array, w: jax.Array) -> jax.Array:
  """The package's convolution whose weight gradient is one product per tap."""
  return convolution.tap_conv(x, w)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--maps", type=int, default=56, help="batch x slots")
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((args.maps, args.size, args.size, 64)), jnp.float32)
  print(f"{args.maps} maps of {args.size}x{args.size}x64, {jax.device_count()} CPU device(s)\n")
  print("| convolution | forward (ms) | + input grad (ms) | + weight grad, XLA (ms) "
        "| + weight grad, per-tap GEMM (ms) | relative weight-grad difference |")
  print("|---|---|---|---|---|---|")
  for kernel, out_features in ((3, 256), (5, 64)):
    w = jnp.asarray(0.05 * rng.standard_normal((kernel, kernel, 64, out_features)),
                    jnp.float32)
    loss = lambda x, w, f: jnp.sum(f(x, w) ** 2)  # pylint: disable=unnecessary-lambda-assignment
    input_grad = jax.jit(jax.grad(lambda x, w: loss(x, w, conv), argnums=0))
    weight_grad = jax.jit(jax.grad(lambda x, w: loss(x, w, conv), argnums=1))
    tap_grad = jax.jit(jax.grad(lambda x, w: loss(x, w, conv_tap_gradient), argnums=1))
    reference = weight_grad(x, w)
    difference = float(jnp.max(jnp.abs(reference - tap_grad(x, w))) / jnp.max(jnp.abs(reference)))
    times = [timed(f, x, w, repeats=args.repeats)
             for f in (jax.jit(conv), input_grad, weight_grad, tap_grad)]
    print(f"| {kernel}x{kernel}, 64 -> {out_features} | "
          + " | ".join(f"{1e3 * t:.0f}" for t in times) + f" | {difference:.1e} |", flush=True)


if __name__ == "__main__":
  main()
