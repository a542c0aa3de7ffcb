"""Spatial-broadcast decoders: slots -> per-slot RGB and alpha, mixed by softmax."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from invariant_slots.modules.convolution import Conv, ConvTranspose
from invariant_slots.modules.encoders import SoftPositionEmbed
from invariant_slots.registry import Registry

Array = jax.Array

DECODERS: Registry[nn.Module] = Registry("decoder")


@DECODERS.register("SpatialBroadcast")
class SpatialBroadcastDecoder(nn.Module):
  """Broadcasts each slot to a grid, adds positions and upsamples with convs.

  Layer i has `features[i]` channels and stride `strides[i]` (a transposed
  convolution when the stride exceeds 1), each followed by a ReLU. `readout`
  "conv" predicts the `output_channels` values plus one alpha logit with a
  final stride-1 3x3 conv; "dense" reads them out of each pixel's features with
  a 1x1 layer (SAVi++). A linear readout commutes with the alpha-weighted sum
  over slots, so "dense" equals SAVi++'s early fusion (readout of the
  alpha-mixed features). The output resolution is
  `broadcast_size * prod(strides)`; `position_embedding` is "borders" or
  "linear" (see `SoftPositionEmbed`).
  """

  broadcast_size: Sequence[int] = (8, 8)
  features: Sequence[int] = (64, 64, 64, 64)
  strides: Sequence[int] = (2, 2, 2, 1)
  kernel_size: int = 5
  output_channels: int = 3
  readout: str = "conv"
  position_embedding: str = "borders"
  conv_transpose_impl: str = "auto"

  @property
  def output_size(self) -> tuple[int, int]:
    scale = 1
    for stride in self.strides:
      scale *= stride
    return (self.broadcast_size[0] * scale, self.broadcast_size[1] * scale)

  @nn.compact
  def __call__(self, slots: Array) -> dict[str, Array]:
    """Decodes `[batch, num_slots, slot_size]`.

    Returns:
      `reconstruction [batch, H, W, C]`, `masks [batch, num_slots, H, W, 1]`
      (softmax over slots) and `slot_outputs [batch, num_slots, H, W, C]`.
    """
    if len(self.strides) != len(self.features):
      raise ValueError("decoder strides and features must have the same length.")
    if self.readout not in ("conv", "dense"):
      raise ValueError(f"decoder readout must be 'conv' or 'dense', got {self.readout!r}.")
    batch, num_slots, slot_size = slots.shape
    x = slots.reshape(batch * num_slots, 1, 1, slot_size)
    x = jnp.broadcast_to(x, (batch * num_slots, *self.broadcast_size, slot_size))
    x = SoftPositionEmbed(self.position_embedding)(x)
    kernel = (self.kernel_size, self.kernel_size)
    for width, stride in zip(self.features, self.strides):
      if stride > 1:
        x = ConvTranspose(width, kernel, (stride, stride),
                          implementation=self.conv_transpose_impl)(x)
      else:
        x = Conv(width, kernel)(x)
      x = nn.relu(x)
    if self.readout == "conv":
      x = Conv(self.output_channels + 1, (3, 3))(x)
      slot_outputs, alpha_logits = jnp.split(x, [self.output_channels], axis=-1)
    else:
      alpha_logits = nn.Dense(1, name="alpha_logits")(x)
      slot_outputs = nn.Dense(self.output_channels, name="targets")(x)
    unflatten = lambda y: y.reshape(batch, num_slots, *y.shape[1:])
    slot_outputs, alpha_logits = unflatten(slot_outputs), unflatten(alpha_logits)
    masks = jax.nn.softmax(alpha_logits, axis=1)
    return {
        "reconstruction": jnp.sum(masks * slot_outputs, axis=1),
        "masks": masks,
        "slot_outputs": slot_outputs,
    }
