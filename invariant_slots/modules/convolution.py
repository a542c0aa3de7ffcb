"""Convolutions that differentiate fast on XLA:CPU.

XLA:CPU computes a convolution's weight gradient 4-6x slower than the forward
pass (docs/benchmarks.md). Three forms avoid that, chosen automatically on CPU:

- `onednn_conv`: all three passes through oneDNN (`modules/onednn.py`), when
  it is installed (`pip install -e ".[cpu]"`) and the arrays are float32;
- `tap_conv`: a convolution whose weight gradient is a few large matrix
  products: at stride 1, one per offset of blocks of 2-4 pixels of a row
  (`blocked_weight_gradient`), one per kernel tap at larger strides; the
  forward pass and the input gradient are XLA's.
- `polyphase_conv_transpose`: a stride-s transposed convolution as one
  stride-1 convolution with the s*s sub-sampled kernels, interleaved
  (depth-to-space).

`Conv` and `ConvTranspose` have the parameters of `flax.linen.Conv` and
`flax.linen.ConvTranspose` (`kernel [kh, kw, in, out]`, `bias [out]`), so
checkpoints are interchangeable, and use XLA's own convolutions on GPU and TPU.
"""

import functools
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from invariant_slots.modules import onednn

Array = jax.Array
Padding = tuple[tuple[int, int], tuple[int, int]]
DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# The fast forms that "auto" may choose on CPU: this environment variable, a
# comma-separated subset of "onednn,taps,polyphase" (the default; "" or "lax"
# leaves XLA's own convolutions everywhere, for benchmarks and comparisons).
AUTO_VARIABLE = "INVARIANT_SLOTS_CPU_CONV"
FAST_FORMS = ("onednn", "taps", "polyphase")
# "auto" takes the tap form only for kernels with at least this many
# `in * out` features over at least this many output positions (batch x
# height x width): below them XLA's weight gradient is as fast, and the tap
# form's longer compilation does not pay (docs/benchmarks.md).
MIN_TAP_FEATURES = 256
MIN_TAP_POSITIONS = 32768


def _auto_cpu_forms() -> tuple[str, ...]:
  """The fast forms "auto" may take here: none off the CPU, else `AUTO_VARIABLE`'s."""
  if jax.default_backend() != "cpu":
    return ()
  return tuple(os.environ.get(AUTO_VARIABLE, ",".join(FAST_FORMS)).split(","))


def _check_implementation(implementation: str, choices: Sequence[str]) -> None:
  if implementation not in ("auto",) + tuple(choices):
    raise ValueError(f"Unknown implementation {implementation!r}; use 'auto', "
                     + " or ".join(repr(c) for c in choices) + ".")


def _use_fast_cpu_forms(implementation: str, choices: Sequence[str]) -> bool:
  """Whether `implementation` ("auto" or one of the two `choices`, fast form
  first) selects the fast CPU form."""
  _check_implementation(implementation, choices)
  if implementation == "auto":
    return choices[0] in _auto_cpu_forms()
  return implementation == choices[0]


def conv_padding(input_shape: Sequence[int], kernel_shape: Sequence[int],
                 strides: Sequence[int], padding: str | Sequence[tuple[int, int]]) -> Padding:
  """Explicit `((low, high), (low, high))` padding of `padding` ("SAME", "VALID" or pairs)."""
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}.")
    padding = jax.lax.padtype_to_pads(tuple(input_shape[1:3]), tuple(kernel_shape[:2]),
                                      tuple(strides), padding)
  return tuple((int(low), int(high)) for low, high in padding)


def _lax_conv(inputs: Array, kernel: Array, strides: tuple[int, int], padding: Padding) -> Array:
  return jax.lax.conv_general_dilated(inputs, kernel, strides, padding,
                                      dimension_numbers=DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _tap_conv(inputs: Array, kernel: Array, strides: tuple[int, int], padding: Padding) -> Array:
  return _lax_conv(inputs, kernel, strides, padding)


def _tap_conv_forward(inputs, kernel, strides, padding):
  return _lax_conv(inputs, kernel, strides, padding), (inputs, kernel)


def _strided_tap_products(inputs: Array, grad: Array, kernel_hw: tuple[int, int],
                          strides: tuple[int, int], padding: Padding) -> Array:
  """`[kh, kw, in, out]` weight gradient of a strided convolution, one
  `[positions, in]^T [positions, out]` matrix product per kernel tap."""
  (kh, kw), (sh, sw), (out_h, out_w) = kernel_hw, strides, grad.shape[1:3]
  batch, channels = inputs.shape[0], inputs.shape[-1]
  # lax.pad takes negative padding (a crop), as the convolution does.
  padded = jax.lax.pad(inputs, jnp.zeros((), inputs.dtype),
                       ((0, 0, 0),) + tuple((low, high, 0) for low, high in padding)
                       + ((0, 0, 0),))
  grad_matrix = grad.reshape(-1, grad.shape[-1])
  taps = []
  for i in range(kh):
    for j in range(kw):
      shifted = jax.lax.slice(
          padded, (0, i, j, 0),
          (batch, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, channels),
          (1, sh, sw, 1))
      taps.append(shifted.reshape(-1, channels).T @ grad_matrix)
  return jnp.stack(taps).reshape(kh, kw, channels, grad.shape[-1])


def weight_block(kernel_hw: Sequence[int]) -> tuple[int, int]:
  """`(bh, bw)` of `blocked_weight_gradient` for a kernel: pixels grouped
  along the width only (a block is then a plain reshape of the row, not a
  transpose), 4 from 4 taps on (a 5x5 kernel: 10 products of `[4 in, 4 out]`,
  1.6x the multiply-adds, in matrices large enough for XLA:CPU to run near
  its peak), 2 for 2-3 taps, 1 (one product per tap) for 1."""
  width = kernel_hw[1]
  return (1, 4 if width >= 4 else 2 if width >= 2 else 1)


def _offset_phase_index(taps: int, block: int) -> tuple[np.ndarray, ...]:
  """For tap `t` and output phase `r` of one axis: the block offset
  `(r + t) // block`, the input phase `(r + t) % block` and `r`, each
  `[taps, block]`."""
  total = np.arange(taps)[:, None] + np.arange(block)[None, :]
  return total // block, total % block, np.broadcast_to(np.arange(block), total.shape)


def blocked_weight_gradient(inputs: Array, grad: Array, kernel_hw: Sequence[int],
                            padding: Padding, block: int | Sequence[int]) -> Array:
  """Weight gradient of a stride-1 convolution from space-to-depth blocks.

  With `block = (bh, bw)`, the padded input and the output gradient are cut
  into `bh x bw` blocks of pixels (`[positions / (bh bw), bh bw features]`).
  Along an axis with block `s`, tap `t` of output pixel `s * q + r` reads
  input pixel `s * (q + d) + rho` with `d, rho = divmod(r + t, s)`, so one
  `[bh bw in, bh bw out]` matrix product per block offset `d`
  (`(s + k - 2) // s + 1` offsets per axis) holds every tap's gradient;
  `block = 1` is one product per tap. The narrower of the two operands is the
  one shifted by `d` (copied once per offset); a narrow output gradient (a
  readout layer) makes all offsets one product.

  Args:
    inputs: `[batch, height, width, in]`, before padding.
    grad: `[batch, out_height, out_width, out]`, the output gradient.
    kernel_hw: `(kh, kw)`.
    padding: `((low, high), (low, high))` of the convolution (negative crops).
    block: `(bh, bw)`, or one side for both.

  Returns:
    `[kh, kw, in, out]`, equal to the gradient of `lax.conv_general_dilated`.
  """
  kh, kw = kernel_hw
  bh, bw = (block, block) if isinstance(block, int) else tuple(block)
  batch, _, _, in_features = inputs.shape
  _, out_h, out_w, out_features = grad.shape
  offsets_h, offsets_w = (bh + kh - 2) // bh + 1, (bw + kw - 2) // bw + 1
  rows, cols = -(-out_h // bh), -(-out_w // bw)  # Output blocks per axis.
  in_rows, in_cols = rows + offsets_h - 1, cols + offsets_w - 1
  (low_h, _), (low_w, _) = padding
  # Zero rows and columns beyond the padding meet only zero output gradients.
  padded = jax.lax.pad(inputs, jnp.zeros((), inputs.dtype), (
      (0, 0, 0), (low_h, bh * in_rows - inputs.shape[1] - low_h, 0),
      (low_w, bw * in_cols - inputs.shape[2] - low_w, 0), (0, 0, 0)))
  grad = jnp.pad(grad, ((0, 0), (0, bh * rows - out_h), (0, bw * cols - out_w), (0, 0)))
  pixels = bh * bw

  def space_to_depth(x: Array, height: int, width: int) -> Array:
    x = x.reshape(batch, height, bh, width, bw, x.shape[-1]).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height, width, pixels * x.shape[-1])

  blocks = space_to_depth(padded, in_rows, in_cols)
  grad_blocks = space_to_depth(grad, rows, cols)
  offsets = [(dh, dw) for dh in range(offsets_h) for dw in range(offsets_w)]
  if out_features < in_features:
    # Shift the narrower output gradient: product d pairs input block Q with
    # gradient block Q - d, all offsets in one product against the input.
    grad_blocks = jnp.pad(grad_blocks, ((0, 0), (offsets_h - 1,) * 2, (offsets_w - 1,) * 2,
                                        (0, 0)))
    shifted = jnp.concatenate([
        grad_blocks[:, offsets_h - 1 - dh:offsets_h - 1 - dh + in_rows,
                    offsets_w - 1 - dw:offsets_w - 1 - dw + in_cols] for dh, dw in offsets], -1)
    products = blocks.reshape(-1, pixels * in_features).T @ shifted.reshape(
        -1, len(offsets) * pixels * out_features)
    products = products.reshape(pixels * in_features, len(offsets), pixels * out_features)
    products = products.transpose(1, 0, 2)
  else:  # Shift the input: product d pairs input block P + d with gradient block P.
    grad_matrix = grad_blocks.reshape(-1, pixels * out_features)
    products = jnp.stack([
        blocks[:, dh:dh + rows, dw:dw + cols].reshape(-1, pixels * in_features).T @ grad_matrix
        for dh, dw in offsets])
  # [d_h, d_w, rho_h, rho_w, in, r_h, r_w, out] -> [d_h, rho_h, r_h, d_w, rho_w, r_w, in, out].
  products = products.reshape(offsets_h, offsets_w, bh, bw, in_features, bh, bw, out_features)
  products = products.transpose(0, 2, 5, 1, 3, 6, 4, 7)
  index_h = tuple(a[:, :, None, None] for a in _offset_phase_index(kh, bh))
  index_w = tuple(a[None, None] for a in _offset_phase_index(kw, bw))
  # [kh, bh, kw, bw, in, out], summed over the output phases r.
  return products[index_h + index_w].sum(axis=(1, 3))


def _tap_conv_backward(strides, padding, residuals, grad):
  inputs, kernel = residuals
  (input_grad,) = jax.linear_transpose(
      lambda x: _lax_conv(x, kernel, strides, padding), inputs)(grad)
  kernel_hw = kernel.shape[:2]
  if strides == (1, 1):
    kernel_grad = blocked_weight_gradient(inputs, grad, kernel_hw, padding,
                                          weight_block(kernel_hw))
  else:
    kernel_grad = _strided_tap_products(inputs, grad, kernel_hw, strides, padding)
  return input_grad, kernel_grad.astype(kernel.dtype)


_tap_conv.defvjp(_tap_conv_forward, _tap_conv_backward)


def tap_conv(inputs: Array, kernel: Array, strides: Sequence[int] = (1, 1),
             padding: str | Sequence[tuple[int, int]] = "SAME") -> Array:
  """Equals `lax.conv_general_dilated` (NHWC, HWIO) in value and both gradients.

  The weight gradient is computed from a few large matrix products
  (`blocked_weight_gradient` at stride 1, one `[in, out]` product per kernel
  tap at larger strides), which XLA:CPU runs several times faster than its own.

  Args:
    inputs: `[batch, height, width, in_features]`.
    kernel: `[kh, kw, in_features, out_features]`.
    strides: `(sh, sw)`.
    padding: "SAME", "VALID" or `((low, high), (low, high))` (negative crops).

  Returns:
    `[batch, out_height, out_width, out_features]`.
  """
  strides = tuple(int(s) for s in strides)
  return _tap_conv(inputs, kernel, strides, conv_padding(inputs.shape, kernel.shape, strides,
                                                         padding))


def lax_conv(inputs: Array, kernel: Array, strides: Sequence[int] = (1, 1),
             padding: str | Sequence[tuple[int, int]] = "SAME") -> Array:
  """XLA's convolution, with the arguments of `tap_conv`."""
  strides = tuple(int(s) for s in strides)
  return _lax_conv(inputs, kernel, strides, conv_padding(inputs.shape, kernel.shape, strides,
                                                         padding))


def onednn_conv(inputs: Array, kernel: Array, strides: Sequence[int] = (1, 1),
                padding: str | Sequence[tuple[int, int]] = "SAME") -> Array:
  """oneDNN's convolution (`modules/onednn.py`), with the arguments of `tap_conv`;
  float32 only."""
  strides = tuple(int(s) for s in strides)
  return onednn.onednn_conv(inputs, kernel, strides,
                            conv_padding(inputs.shape, kernel.shape, strides, padding))


CONVOLUTIONS = {"onednn": onednn_conv, "taps": tap_conv, "lax": lax_conv}


def _auto_conv(in_features: int, out_features: int, positions: int, dtype=jnp.float32):
  """The convolution "auto" chooses for an `in -> out` kernel with `positions`
  output positions: oneDNN's for float32 where it is installed, else `tap_conv`
  for large layers, else XLA's."""
  forms = _auto_cpu_forms()
  if "onednn" in forms and dtype == jnp.float32 and onednn.available():
    return onednn_conv
  taps = ("taps" in forms and in_features * out_features >= MIN_TAP_FEATURES
          and positions >= MIN_TAP_POSITIONS)
  return tap_conv if taps else lax_conv


class _Convolution(nn.Module):
  """Options and parameters shared by `Conv` and `ConvTranspose`."""

  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: str = "SAME"
  use_bias: bool = True
  implementation: str = "auto"

  def stride_pair(self) -> tuple[int, int]:
    """`strides` as `(sh, sw)`."""
    return (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)

  def inputs_and_kernel(self, inputs: Array) -> tuple[Array, Array]:
    """`inputs` and the `[kh, kw, in, features]` kernel parameter (`lecun_normal`,
    as flax's), promoted to one dtype as `nn.Conv` does."""
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        tuple(self.kernel_size) + (inputs.shape[-1], self.features))
    return nn.dtypes.promote_dtype(inputs, kernel, dtype=None)

  def add_bias(self, outputs: Array) -> Array:
    """`outputs` plus the `[features]` bias parameter when `use_bias`."""
    if not self.use_bias:
      return outputs
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return outputs + bias.astype(outputs.dtype)


class Conv(_Convolution):
  """Drop-in `nn.Conv` (2D, NHWC) whose weight gradient is fast on CPU.

  `implementation`: "onednn" (`onednn_conv`), "taps" (`tap_conv`), "lax"
  (XLA's convolution) or "auto" (on CPU oneDNN for float32 where installed,
  else taps for kernels of at least `MIN_TAP_FEATURES` in * out features over
  `MIN_TAP_POSITIONS` positions; lax elsewhere).
  """

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    """`[batch, height, width, in]` -> `[batch, out_height, out_width, features]`."""
    _check_implementation(self.implementation, tuple(CONVOLUTIONS))
    inputs, kernel = self.inputs_and_kernel(inputs)
    if self.implementation == "auto":
      positions = inputs.shape[0] * inputs.shape[1] * inputs.shape[2] // int(
          np.prod(self.stride_pair()))
      conv = _auto_conv(inputs.shape[-1], self.features, positions, inputs.dtype)
    else:
      conv = CONVOLUTIONS[self.implementation]
    return self.add_bias(conv(inputs, kernel, self.stride_pair(), self.padding))


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
                             padding: str = "SAME", conv=lax_conv) -> Array:
  """Equals `lax.conv_transpose(inputs, kernel, strides, padding)` (NHWC, HWIO).

  Args:
    inputs: `[batch, height, width, in_features]`.
    kernel: `[kh, kw, in_features, out_features]`.
    strides: `(sh, sw)`.
    padding: 'SAME' or 'VALID'.
    conv: The stride-1 convolution `conv(inputs, kernel, strides, padding)`
      (`lax_conv` or `tap_conv`).

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
  outputs = conv(inputs, phases, (1, 1), (pad_h, pad_w))
  outputs = outputs.reshape(batch, rows, cols, sh, sw, out_features)
  outputs = outputs.transpose(0, 1, 3, 2, 4, 5)
  outputs = outputs.reshape(batch, rows * sh, cols * sw, out_features)
  return outputs[:, :out_h, :out_w]


class ConvTranspose(_Convolution):
  """Drop-in `nn.ConvTranspose` whose strided case may run in polyphase form.

  `implementation`: 'polyphase', 'lax' (XLA's transposed convolution) or 'auto'
  (polyphase on CPU, where it is much faster to differentiate, lax elsewhere).
  """

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    """`[batch, height, width, in]` -> `[batch, out_height, out_width, features]`."""
    (inputs, kernel), strides = self.inputs_and_kernel(inputs), self.stride_pair()
    if _use_fast_cpu_forms(self.implementation, ("polyphase", "lax")) and max(strides) > 1:
      outputs = polyphase_conv_transpose(
          inputs, kernel, strides, self.padding,
          conv=_auto_conv(inputs.shape[-1], strides[0] * strides[1] * self.features,
                          inputs.shape[0] * inputs.shape[1] * inputs.shape[2],
                          inputs.dtype))
    else:
      outputs = jax.lax.conv_transpose(inputs, kernel, strides, self.padding,
                                       dimension_numbers=DIMENSIONS)
    return self.add_bias(outputs)
