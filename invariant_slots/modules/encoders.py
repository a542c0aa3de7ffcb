"""Image encoders: pixels `[batch, height, width, 3]` -> features `[batch, h, w, dim]`."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from invariant_slots.modules.attention import TransformerBlock
from invariant_slots.modules.convolution import Conv
from invariant_slots.registry import Registry

Array = jax.Array

ENCODERS: Registry[nn.Module] = Registry("encoder")


def position_grid(height: int, width: int) -> Array:
  """`[height, width, 4]` linear ramps to the four borders (y, x, 1-y, 1-x)."""
  ys = jnp.linspace(0.0, 1.0, height)
  xs = jnp.linspace(0.0, 1.0, width)
  grid = jnp.stack(jnp.meshgrid(ys, xs, indexing="ij"), axis=-1)
  return jnp.concatenate([grid, 1.0 - grid], axis=-1)


def linear_position_grid(height: int, width: int) -> Array:
  """`[height, width, 2]` coordinates (y, x), each from -1 to 1."""
  ys = jnp.linspace(-1.0, 1.0, height)
  xs = jnp.linspace(-1.0, 1.0, width)
  return jnp.stack(jnp.meshgrid(ys, xs, indexing="ij"), axis=-1)


# `position_embedding` options: the border ramps of Slot Attention or SAVi's
# 2-channel grid.
POSITION_GRIDS = {"borders": position_grid, "linear": linear_position_grid}


class SoftPositionEmbed(nn.Module):
  """Adds a learned projection of a position grid to `[batch, h, w, dim]`.

  `grid`: "borders" (4 ramps to the borders, Slot Attention) or "linear"
  (y and x in [-1, 1], SAVi).
  """

  grid: str = "borders"

  @nn.compact
  def __call__(self, features: Array) -> Array:
    if self.grid not in POSITION_GRIDS:
      raise ValueError(f"Unknown position grid {self.grid!r}; use one of "
                       f"{', '.join(POSITION_GRIDS)}.")
    grid = POSITION_GRIDS[self.grid](*features.shape[-3:-1])
    return features + nn.Dense(features.shape[-1])(grid)


class FeatureHead(nn.Module):
  """Position embedding, LayerNorm and MLP: `[b, h, w, c]` -> `[b, h, w, dim]`.

  `output_size` None keeps the width `c`.
  """

  mlp_size: int
  output_size: int | None
  position_embedding: str = "borders"

  @nn.compact
  def __call__(self, features: Array) -> Array:
    output_size = self.output_size or features.shape[-1]
    features = SoftPositionEmbed(self.position_embedding)(features)
    features = nn.LayerNorm()(features)
    features = nn.relu(nn.Dense(self.mlp_size)(features))
    return nn.Dense(output_size)(features)


class TransformerHead(nn.Module):
  """SAVi++'s encoder head: `[b, h, w, c]` -> `[b, h, w, qkv_size]`.

  `FeatureHead` keeping the width `c`, then `relu(Dense(qkv_size))` and
  `num_layers` pre-LN Transformer blocks over the `h * w` positions.
  `zero_init_residual` starts each block as the identity.
  """

  mlp_size: int
  num_layers: int = 4
  num_heads: int = 4
  qkv_size: int = 64
  transformer_mlp_size: int = 1024
  position_embedding: str = "linear"
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, features: Array) -> Array:
    batch, height, width, _ = features.shape
    x = FeatureHead(self.mlp_size, None, self.position_embedding)(features)
    x = nn.relu(nn.Dense(self.qkv_size)(x.reshape(batch, height * width, -1)))
    for _ in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.transformer_mlp_size, self.qkv_size,
                           zero_init_residual=self.zero_init_residual)(x)
    return x.reshape(batch, height, width, self.qkv_size)


class HeadedEncoder(nn.Module):
  """Base of the image encoders: a backbone (`backbone`, in subclasses) and the head.

  `mlp_size`, `output_size` and `position_embedding` ("borders" or "linear")
  configure `FeatureHead`; `transformer` (the options of `TransformerHead`:
  num_layers, num_heads, qkv_size, transformer_mlp_size, zero_init_residual)
  replaces it with SAVi++'s Transformer head, whose width is its `qkv_size`.
  """

  mlp_size: int = 64
  output_size: int = 64
  position_embedding: str = "borders"
  transformer: dict | None = None

  def backbone(self, image: Array) -> Array:
    """`[b, H, W, 3]` -> `[b, h, w, c]`."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, image: Array, train: bool = False) -> Array:
    """`[b, H, W, 3]` -> `[b, h, w, output_size]` (or the Transformer's `qkv_size`)."""
    del train
    features = self.backbone(image)
    if self.transformer:
      return TransformerHead(self.mlp_size, position_embedding=self.position_embedding,
                             name="head", **self.transformer)(features)
    return FeatureHead(self.mlp_size, self.output_size, self.position_embedding)(features)


@ENCODERS.register("CNN")
class CNNEncoder(HeadedEncoder):
  """Plain CNN (Locatello et al.: 4 x 5x5 convs, 64 channels) plus the head
  (`HeadedEncoder`)."""

  features: Sequence[int] = (64, 64, 64, 64)
  kernel_size: int = 5
  strides: Sequence[int] = (1, 1, 1, 1)

  def backbone(self, image: Array) -> Array:
    if len(self.strides) != len(self.features):
      raise ValueError("encoder strides and features must have the same length.")
    x = image
    for width, stride in zip(self.features, self.strides):
      x = nn.relu(Conv(width, (self.kernel_size,) * 2, strides=stride)(x))
    return x


class ResidualBlock(nn.Module):
  """ResNet basic block with group normalisation."""

  features: int
  stride: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    shortcut = x
    y = Conv(self.features, (3, 3), strides=self.stride, use_bias=False)(x)
    y = nn.relu(nn.GroupNorm(num_groups=min(32, self.features))(y))
    y = Conv(self.features, (3, 3), use_bias=False)(y)
    y = nn.GroupNorm(num_groups=min(32, self.features), scale_init=nn.initializers.zeros)(y)
    if shortcut.shape != y.shape:
      shortcut = Conv(self.features, (1, 1), strides=self.stride, use_bias=False)(x)
      shortcut = nn.GroupNorm(num_groups=min(32, self.features))(shortcut)
    return nn.relu(shortcut + y)


class ResNet(nn.Module):
  """ResNet with basic blocks and group norm: `[b, H, W, 3]` -> `[b, h, w, width * 8]`.

  The stem is a `stem_kernel_size` conv of stride `stem_stride` and a group
  norm, followed by a ReLU when `stem_activation`; there is no max-pool, so
  with stride 1 a 64x64 image gives an 8x8 feature map. SAVi++'s stem for small
  inputs is 3x3, stride 1, without the ReLU.
  """

  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  stem_kernel_size: int = 7
  stem_stride: int = 1
  stem_activation: bool = True

  @nn.compact
  def __call__(self, image: Array) -> Array:
    x = Conv(self.width, (self.stem_kernel_size,) * 2, strides=self.stem_stride,
                use_bias=False)(image)
    x = nn.GroupNorm(num_groups=min(32, self.width))(x)
    if self.stem_activation:
      x = nn.relu(x)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(self.width * 2**stage, stride)(x)
    return x


@ENCODERS.register("ResNet34")
class ResNet34Encoder(HeadedEncoder):
  """ResNet-34 (3, 4, 6, 3 basic blocks, `ResNet`) plus the head (`HeadedEncoder`).

  SAVi++ uses the 3x3 stem without ReLU, the "linear" position grid and the
  Transformer head.
  """

  mlp_size: int = 256
  output_size: int = 128
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  stem_kernel_size: int = 7
  stem_stride: int = 1
  stem_activation: bool = True

  def backbone(self, image: Array) -> Array:
    return ResNet(self.stage_sizes, self.width, self.stem_kernel_size, self.stem_stride,
                  self.stem_activation, name="backbone")(image)
