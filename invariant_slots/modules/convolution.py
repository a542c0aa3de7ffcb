"""Transposed convolution in polyphase (sub-pixel) form.

A stride-s transposed convolution equals s*s stride-1 convolutions with
sub-sampled kernels whose outputs are interleaved (depth-to-space). XLA:CPU
computes the weight gradient of strided transposed convolutions very slowly;
the polyphase form is fast there. Parameters match `flax.linen.ConvTranspose`
(`kernel [kh, kw, in, out]`, `bias [out]`), so checkpoints are interchangeable.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def transpose_padding(kernel: int, stride: int, padding: str) -> tuple[int, int]:
  """Padding of the dilated input that `lax.conv_transpose` uses."""
  if padding == "SAME":
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else int(np.ceil(total / 2))
  elif padding == "VALID":
    total = kernel + stride - 2 + max(kernel - stride, 0)
    low = kernel - 1
  else:
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}.")
  return low, total - low


def _phase_taps(size: int, kernel: int, stride: int,
                padding: str) -> tuple[np.ndarray, int, int, int]:
  """One spatial axis of the polyphase decomposition.

  Output `o = stride * i + r` of the transposed convolution reads input
  `i + offset` through kernel tap `t`. Returns a `[window, stride, kernel]`
  0/1 matrix `taps[offset - lowest, r, t]`, the lowest offset, the highest
  offset, and the output length.
  """
  low, high = transpose_padding(kernel, stride, padding)
  out_size = (size - 1) * stride + 1 + low + high - kernel + 1
  pairs = []
  for r in range(stride):
    for t in range(kernel):
      if (r + t - low) % stride == 0:
        pairs.append(((r + t - low) // stride, r, t))
  lowest = min(p[0] for p in pairs)
  highest = max(p[0] for p in pairs)
  taps = np.zeros((highest - lowest + 1, stride, kernel), np.float32)
  for offset, r, t in pairs:
    taps[offset - lowest, r, t] = 1.0
  return taps, lowest, highest, out_size


def polyphase_conv_transpose(inputs: Array, kernel: Array, strides: Sequence[int],
                             padding: str = "SAME") -> Array:
  """Equals `lax.conv_transpose(inputs, kernel, strides, padding)` (NHWC, HWIO).

  Args:
    inputs: `[batch, height, width, in_features]`.
    kernel: `[kh, kw, in_features, out_features]`.
    strides: `(sh, sw)`.
    padding: 'SAME' or 'VALID'.

  Returns:
    `[batch, out_height, out_width, out_features]`.
  """
  (sh, sw), (kh, kw) = strides, kernel.shape[:2]
  batch, height, width, _ = inputs.shape
  out_features = kernel.shape[-1]
  taps_h, low_h, high_h, out_h = _phase_taps(height, kh, sh, padding)
  taps_w, low_w, high_w, out_w = _phase_taps(width, kw, sw, padding)
  # Combined kernel [window_h, window_w, in, sh * sw * out].
  phases = jnp.einsum("arh,bsw,hwio->abirso", taps_h, taps_w, kernel)
  phases = phases.reshape(phases.shape[:3] + (sh * sw * out_features,))
  rows = -(-out_h // sh)  # Outputs per phase, rounded up.
  cols = -(-out_w // sw)
  pad_h = (-low_h, rows - 1 + high_h - (height - 1))
  pad_w = (-low_w, cols - 1 + high_w - (width - 1))
  outputs = jax.lax.conv_general_dilated(
      inputs, phases, window_strides=(1, 1), padding=(pad_h, pad_w),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  outputs = outputs.reshape(batch, rows, cols, sh, sw, out_features)
  outputs = outputs.transpose(0, 1, 3, 2, 4, 5)
  outputs = outputs.reshape(batch, rows * sh, cols * sw, out_features)
  return outputs[:, :out_h, :out_w]


class ConvTranspose(nn.Module):
  """Drop-in `nn.ConvTranspose` whose strided case may run in polyphase form.

  `implementation`: 'polyphase', 'lax' (XLA's transposed convolution) or 'auto'
  (polyphase on CPU, where it is much faster to differentiate, lax elsewhere).
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: str = "SAME"
  use_bias: bool = True
  implementation: str = "auto"

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        tuple(self.kernel_size) + (inputs.shape[-1], self.features))
    implementation = self.implementation
    if implementation == "auto":
      implementation = "polyphase" if jax.default_backend() == "cpu" else "lax"
    if implementation == "polyphase" and max(self.strides) > 1:
      outputs = polyphase_conv_transpose(inputs, kernel, self.strides, self.padding)
    elif implementation in ("polyphase", "lax"):
      outputs = jax.lax.conv_transpose(
          inputs, kernel, tuple(self.strides), self.padding,
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      raise ValueError(
          f"Unknown implementation {implementation!r}; use 'auto', 'polyphase' or 'lax'.")
    if self.use_bias:
      outputs = outputs + self.param("bias", nn.initializers.zeros, (self.features,))
    return outputs
