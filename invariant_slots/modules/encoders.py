"""Image encoders: pixels `[batch, height, width, 3]` -> features `[batch, h, w, dim]`."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from invariant_slots.registry import Registry

Array = jax.Array

ENCODERS: Registry[nn.Module] = Registry("encoder")


def position_grid(height: int, width: int) -> Array:
  """`[height, width, 4]` linear ramps to the four borders (y, x, 1-y, 1-x)."""
  ys = jnp.linspace(0.0, 1.0, height)
  xs = jnp.linspace(0.0, 1.0, width)
  grid = jnp.stack(jnp.meshgrid(ys, xs, indexing="ij"), axis=-1)
  return jnp.concatenate([grid, 1.0 - grid], axis=-1)


class SoftPositionEmbed(nn.Module):
  """Adds a learned projection of the border ramps to `[batch, h, w, dim]`."""

  @nn.compact
  def __call__(self, features: Array) -> Array:
    grid = position_grid(*features.shape[-3:-1])
    return features + nn.Dense(features.shape[-1])(grid)


class FeatureHead(nn.Module):
  """Position embedding, LayerNorm and MLP: `[b, h, w, c]` -> `[b, h, w, dim]`."""

  mlp_size: int
  output_size: int

  @nn.compact
  def __call__(self, features: Array) -> Array:
    features = SoftPositionEmbed()(features)
    features = nn.LayerNorm()(features)
    features = nn.relu(nn.Dense(self.mlp_size)(features))
    return nn.Dense(self.output_size)(features)


@ENCODERS.register("CNN")
class CNNEncoder(nn.Module):
  """Plain CNN (Locatello et al.: 4 x 5x5 convs, 64 channels) plus `FeatureHead`."""

  features: Sequence[int] = (64, 64, 64, 64)
  kernel_size: int = 5
  strides: Sequence[int] = (1, 1, 1, 1)
  mlp_size: int = 64
  output_size: int = 64

  @nn.compact
  def __call__(self, image: Array, train: bool = False) -> Array:
    del train
    if len(self.strides) != len(self.features):
      raise ValueError("encoder strides and features must have the same length.")
    x = image
    for width, stride in zip(self.features, self.strides):
      x = nn.relu(nn.Conv(width, (self.kernel_size,) * 2, strides=stride)(x))
    return FeatureHead(self.mlp_size, self.output_size)(x)


class ResidualBlock(nn.Module):
  """ResNet basic block with group normalisation."""

  features: int
  stride: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    shortcut = x
    y = nn.Conv(self.features, (3, 3), strides=self.stride, use_bias=False)(x)
    y = nn.relu(nn.GroupNorm(num_groups=min(32, self.features))(y))
    y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
    y = nn.GroupNorm(num_groups=min(32, self.features), scale_init=nn.initializers.zeros)(y)
    if shortcut.shape != y.shape:
      shortcut = nn.Conv(self.features, (1, 1), strides=self.stride, use_bias=False)(x)
      shortcut = nn.GroupNorm(num_groups=min(32, self.features))(shortcut)
    return nn.relu(shortcut + y)


@ENCODERS.register("ResNet34")
class ResNet34Encoder(nn.Module):
  """ResNet-34 (3, 4, 6, 3 basic blocks) with group norm, plus `FeatureHead`.

  As in SAVi++, the stem does not downsample by default (`stem_stride=1`, no
  max-pool), so a 64x64 image gives an 8x8 feature map.
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  stem_stride: int = 1
  mlp_size: int = 256
  output_size: int = 128

  @nn.compact
  def __call__(self, image: Array, train: bool = False) -> Array:
    del train
    x = nn.Conv(self.width, (7, 7), strides=self.stem_stride, use_bias=False)(image)
    x = nn.relu(nn.GroupNorm(num_groups=min(32, self.width))(x))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(self.width * 2**stage, stride)(x)
    return FeatureHead(self.mlp_size, self.output_size)(x)
