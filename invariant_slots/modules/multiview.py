"""Object Scene Representation Transformer (OSRT): SRT encoder, corrector, decoder.

The encoder turns posed input views into a set-latent scene representation;
a registered corrector (`CORRECTORS`) turns that set into slots, each with a
3D point triangulated from the rays it attends to; a decoder (OSRT's Slot
Mixer, or the ray-broadcast decoder that uses the points) renders any query
ray from the slots, and its per-ray weights over slots are the object masks.
"""

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from invariant_slots.modules import models
from invariant_slots.modules import remat
from invariant_slots.modules.attention import ACTIVATIONS, TransformerStack
from invariant_slots.modules.convolution import Conv
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.modules.decoders import DECODERS
from invariant_slots.modules.encoders import ENCODERS
from invariant_slots.modules.initializers import INITIALIZERS
from invariant_slots.registry import ConfigError

Array = jax.Array


def sinusoidal_encoding(x: Array, num_octaves: int, start_octave: int = 0) -> Array:
  """Multi-octave sine/cosine features of coordinates.

  Coordinate `x_c` gives `sin(2^k pi x_c)` and `cos(2^k pi x_c)` for
  `k = start_octave, ..., start_octave + num_octaves - 1`.

  Args:
    x: `[..., dims]`.
    num_octaves: Number of frequencies.
    start_octave: Exponent of the lowest frequency.

  Returns:
    `[..., dims * 2 * num_octaves]`: all sines (coordinate-major, then octave),
    then all cosines in the same order.
  """
  frequencies = jnp.pi * 2.0 ** jnp.arange(start_octave, start_octave + num_octaves)
  scaled = (x[..., None] * frequencies).reshape(x.shape[:-1] + (-1,))
  return jnp.concatenate([jnp.sin(scaled), jnp.cos(scaled)], axis=-1)


@dataclasses.dataclass(frozen=True)
class RayEncoding:
  """Sinusoidal features of ray origins and directions: `[..., 3]` x 2 -> `[..., F]`."""

  origin_octaves: int = 8
  origin_start_octave: int = 0
  direction_octaves: int = 4
  direction_start_octave: int = 0

  def __call__(self, origins: Array, directions: Array) -> Array:
    return jnp.concatenate([
        sinusoidal_encoding(origins, self.origin_octaves, self.origin_start_octave),
        sinusoidal_encoding(directions, self.direction_octaves, self.direction_start_octave),
    ], axis=-1)


def patch_rays(origins: Array, directions: Array, grid: tuple[int, int]
               ) -> tuple[Array, Array]:
  """Mean ray of each patch: `[batch, views, H, W, 3]` x 2 -> `[batch, views, h, w, 3]` x 2.

  The image is cut into a `grid` of `h x w` equal patches; the mean direction is
  renormalised to unit length.
  """
  *lead, height, width, _ = origins.shape
  h, w = grid
  if height % h or width % w:
    raise ValueError(f"Views of {height}x{width} pixels do not split into {h}x{w} equal patches; "
                     "use a resolution divisible by 2 ** len(model.encoder.features).")
  shape = (*lead, h, height // h, w, width // w, 3)
  mean_origins = origins.reshape(shape).mean(axis=(-4, -2))
  mean_directions = directions.reshape(shape).mean(axis=(-4, -2))
  return mean_origins, mean_directions / jnp.linalg.norm(mean_directions, axis=-1, keepdims=True)


def triangulate(weights: Array, origins: Array, directions: Array,
                prior: float = 1e-2) -> Array:
  """The point nearest, in weighted least squares, to the rays each slot attends to.

  For slot k it minimises `sum_t w_kt |(I - d_t d_t^T)(p - o_t)|^2 + prior |p|^2`:
  the squared distances from `p` to the rays, plus a pull towards the origin
  that keeps the solution defined when a slot sees only parallel rays.

  Args:
    weights: `[batch, num_slots, tokens]`, each row summing to one.
    origins, directions: `[batch, tokens, 3]`, unit directions.
    prior: Weight of the pull towards the origin.

  Returns:
    `[batch, num_slots, 3]`.
  """
  projectors = jnp.eye(3) - directions[..., :, None] * directions[..., None, :]
  # (I - d d^T) o: the origin's component across the ray.
  across = origins - jnp.sum(origins * directions, axis=-1, keepdims=True) * directions
  normal = jnp.einsum("bkt,btij->bkij", weights, projectors) + prior * jnp.eye(3)
  target = jnp.einsum("bkt,bti->bki", weights, across)
  return jnp.linalg.solve(normal, target[..., None])[..., 0]


RAY_INPUTS = ("pixels", "patches")


@ENCODERS.register("SRT")
class SRTEncoder(TransformerStack):
  """Scene encoder of SRT: shared CNN over posed views, then a Transformer.

  The CNN has one block per entry of `features`: a 3x3 conv to
  `hidden_features[i]` channels (default `features[i]`), then a 3x3 conv of
  stride 2 to `features[i]`, each with a ReLU (`conv_bias` switches the conv
  biases). A linear map takes each patch to `hidden_size`; the rays enter as
  set by `ray_input` (below). `num_layers` pre-LN Transformer blocks
  (`TransformerStack`) attend over all patches of all views. With
  `first_view_embedding` a learned vector marks the patches of the first view;
  with `output_size` a LayerNorm and a linear map to that width end the
  encoder. OSRT's encoder: features (192, 384, 768), hidden_features (96, 192,
  384), no conv bias, no qkv bias, exact GELU, neither of the last two.
  """

  features: Sequence[int] = (96, 192, 384)
  hidden_features: Sequence[int] | None = None
  conv_bias: bool = True
  hidden_size: int = 768
  num_layers: int = 5
  num_heads: int = 12
  mlp_size: int = 1536
  first_view_embedding: bool = True
  output_size: int | None = 768
  ray_encoding: RayEncoding = RayEncoding()
  # "pixels": each pixel's ray encoding is concatenated to its colour before the
  # CNN (SRT). "patches": the CNN sees colours only, and the encoding of each
  # patch's mean ray is projected (weights starting at zero) and added to the
  # patch's feature, so the features of a new model follow image content.
  ray_input: str = "pixels"
  # Recompute each Transformer layer in the backward pass (the attention over
  # all views' tokens is the encoder's largest activation).
  remat: bool = False

  def token_rays(self, origins: Array, directions: Array) -> tuple[Array, Array]:
    """Mean ray of each token's patch: `[batch, views, H, W, 3]` x 2 -> `[batch, tokens, 3]` x 2."""
    scale = 2 ** len(self.features)
    grid = (origins.shape[-3] // scale, origins.shape[-2] // scale)
    batch = origins.shape[0]
    return tuple(r.reshape(batch, -1, 3) for r in patch_rays(origins, directions, grid))

  @nn.compact
  def __call__(self, images: Array, origins: Array, directions: Array) -> Array:
    """`[batch, views, H, W, 3]` x 3 -> set-latent `[batch, views * h * w, width]`.

    `width` is `output_size`, or `hidden_size` without the output map.
    """
    batch, views = images.shape[:2]
    if self.ray_input == "pixels":
      x = jnp.concatenate([images, self.ray_encoding(origins, directions)], axis=-1)
    elif self.ray_input == "patches":
      x = images
    else:
      raise ValueError(f"ray_input must be 'pixels' or 'patches', got {self.ray_input!r}.")
    hidden_features = self.hidden_features or self.features
    if len(hidden_features) != len(self.features):
      raise ValueError("encoder hidden_features and features must have the same length.")
    x = x.reshape((batch * views,) + x.shape[2:])
    for index, (hidden, width) in enumerate(zip(hidden_features, self.features)):
      x = nn.relu(Conv(hidden, (3, 3), use_bias=self.conv_bias, name=f"conv_{index}_0")(x))
      x = nn.relu(Conv(width, (3, 3), strides=2, use_bias=self.conv_bias,
                          name=f"conv_{index}_1")(x))
    x = nn.Dense(self.hidden_size, name="patch_projection")(x)
    if self.ray_input == "patches":
      patch_origins, patch_directions = patch_rays(origins, directions, x.shape[1:3])
      rays = self.ray_encoding(patch_origins, patch_directions)
      ray_features = nn.Dense(self.hidden_size, kernel_init=nn.initializers.zeros,
                              name="ray_projection")(rays)
      x = x + ray_features.reshape((batch * views,) + ray_features.shape[2:])
    x = x.reshape((batch, views, -1, self.hidden_size))
    if self.first_view_embedding:
      # Marks the first view, the reference frame of the scene, as in SRT.
      first_view = self.param("first_view_embedding", nn.initializers.normal(0.02),
                              (2, self.hidden_size))
      x = x + first_view[jnp.minimum(jnp.arange(views), 1)][None, :, None]
    x = x.reshape((batch, -1, self.hidden_size))
    for index in range(self.num_layers):
      block = self.transformer_block(f"transformer_{index}")
      x = remat.call(block, x, remat=self.remat)
    if self.output_size is None:
      return x
    x = nn.LayerNorm(name="output_norm")(x)
    return nn.Dense(self.output_size, name="output_projection")(x)


RENDER_INPUTS = ("rays", "queries")


@DECODERS.register("SlotMixer")
class SlotMixerDecoder(TransformerStack):
  """Slot Mixer: per-ray weights over slots from an allocation Transformer.

  Query rays (encoded like the encoder's) go through an MLP (`query_mlp_size`
  hidden units, `hidden_size` out) and `num_layers` pre-LN cross-attention
  blocks to the slots (`TransformerStack`). The dot products of the result,
  projected to `mixing_size`, with the slots projected to `mixing_size`,
  softmaxed over slots, are the masks. The mask-weighted slot mean and the render input
  (`render_input`: the ray encoding, or the query-MLP output as in OSRT) go
  through the render MLP (`render_sizes`, `render_activation`) to RGB.

  `slot_norm`: the Transformer and the mixing keys read LayerNorm(slots)
  instead of the slots. `mixing_norm`: a LayerNorm before the query projection
  of the mixing. OSRT: hidden_size 180, query_mlp_size 360, qkv_size 1536,
  mlp_size 3072, exact GELU, mixing_size 1536, no slot or mixing norm, render
  input "queries", leaky ReLU.
  """

  hidden_size: int = 256
  query_mlp_size: int | None = None
  mixing_size: int | None = None
  slot_norm: bool = True
  mixing_norm: bool = True
  render_input: str = "rays"
  render_sizes: Sequence[int] = (1536, 1536, 1536, 1536)
  render_activation: str = "relu"
  ray_encoding: RayEncoding = RayEncoding()

  @nn.compact
  def __call__(self, slots: Array, positions: Array, origins: Array, directions: Array
               ) -> dict[str, Array]:
    """Renders rays `[batch, rays, 3]` from slots `[batch, num_slots, slot_size]`.

    `positions` (the slots' 3D points, `RayBroadcastDecoder`) are not used.

    Returns:
      `rgb [batch, rays, 3]` and `masks [batch, rays, num_slots]`.
    """
    del positions
    if self.render_input not in RENDER_INPUTS:
      raise ValueError(f"render_input must be one of {RENDER_INPUTS}, got "
                       f"{self.render_input!r}.")
    rays = self.ray_encoding(origins, directions)
    query_mlp = nn.Dense(self.query_mlp_size or self.hidden_size, name="query_mlp_0")(rays)
    queries = nn.Dense(self.hidden_size, name="query_mlp_1")(nn.relu(query_mlp))
    context = nn.LayerNorm(name="slot_norm")(slots) if self.slot_norm else slots
    x = queries
    for index in range(self.num_layers):
      x = self.transformer_block(f"allocation_{index}")(x, context)
    if self.mixing_norm:
      x = nn.LayerNorm(name="mixing_norm")(x)
    mixing_size = self.mixing_size or self.hidden_size
    mixing_queries = nn.Dense(mixing_size, use_bias=False, name="mixing_query")(x)
    mixing_keys = nn.Dense(mixing_size, use_bias=False, name="mixing_key")(context)
    logits = jnp.einsum("brd,bkd->brk", mixing_queries, mixing_keys) / jnp.sqrt(mixing_size)
    masks = jax.nn.softmax(logits, axis=-1)
    mixed = jnp.einsum("brk,bkd->brd", masks, slots)
    x = jnp.concatenate([mixed, rays if self.render_input == "rays" else queries], axis=-1)
    activation = ACTIVATIONS[self.render_activation]
    for index, width in enumerate(self.render_sizes):
      x = activation(nn.Dense(width, name=f"render_{index}")(x))
    rgb = nn.Dense(3, name=f"render_{len(self.render_sizes)}")(x)
    return {"rgb": nn.sigmoid(rgb), "masks": masks}


@DECODERS.register("RayBroadcast")
class RayBroadcastDecoder(nn.Module):
  """Spatial broadcast over rays: every slot renders every ray, masks by softmax.

  Each slot has a 3D point (`positions`, triangulated from the rays it attends
  to). For a ray `(o, d)` and a slot at `p`, the slot's MLP reads the slot,
  the ray's encoding and where the point lies from the ray: its depth along
  the ray `(p - o) . d`, the perpendicular offset `(p - o) - ((p - o) . d) d`
  and that offset's length. It outputs an RGB value and an alpha logit; the
  alphas, softmaxed over slots, are the masks and weight the colours. The MLP
  has `hidden_sizes` ReLU layers, the first reading the three inputs through
  one linear map each.
  """

  hidden_sizes: Sequence[int] = (128, 128, 128)
  ray_encoding: RayEncoding = RayEncoding()

  @nn.compact
  def __call__(self, slots: Array, positions: Array, origins: Array, directions: Array
               ) -> dict[str, Array]:
    """Renders rays `[batch, rays, 3]` from slots `[batch, num_slots, slot_size]` at
    `positions [batch, num_slots, 3]`.

    Returns:
      `rgb [batch, rays, 3]` and `masks [batch, rays, num_slots]`.
    """
    offsets = positions[:, None, :, :] - origins[:, :, None, :]  # [batch, rays, slots, 3]
    depth = jnp.sum(offsets * directions[:, :, None, :], axis=-1, keepdims=True)
    perpendicular = offsets - depth * directions[:, :, None, :]
    distance = jnp.linalg.norm(perpendicular, axis=-1, keepdims=True)
    geometry = jnp.concatenate([depth, perpendicular, distance], axis=-1)
    width = self.hidden_sizes[0]
    x = (nn.Dense(width, name="slot_input")(slots)[:, None]
         + nn.Dense(width, use_bias=False, name="ray_input")(
             self.ray_encoding(origins, directions))[:, :, None]
         + nn.Dense(width, use_bias=False, name="geometry_input")(geometry))
    x = nn.relu(x)
    for index, size in enumerate(self.hidden_sizes[1:]):
      x = nn.relu(nn.Dense(size, name=f"hidden_{index}")(x))
    outputs = nn.Dense(4, name="readout")(x)
    masks = jax.nn.softmax(outputs[..., 3], axis=-1)
    rgb = jnp.einsum("brk,brkc->brc", masks, nn.sigmoid(outputs[..., :3]))
    return {"rgb": rgb, "masks": masks}


class OSRT(nn.Module):
  """Encoder, slot initialiser, corrector, slot points and decoder (Slot Mixer or ray broadcast)."""

  encoder: SRTEncoder
  initializer: nn.Module
  corrector: nn.Module
  decoder: SlotMixerDecoder
  # Rays decoded at once (0: all); bounds the decoder's memory when rendering
  # whole views. Rays are independent, so the result does not depend on it.
  ray_chunk_size: int = 0
  # Recompute the corrector and each ray chunk in the backward pass (the
  # encoder's layers: `SRTEncoder.remat`).
  remat: bool = False

  def __call__(self, batch: dict[str, Array], train: bool = False) -> dict[str, Array]:
    """Encodes the input views and renders the target rays.

    Args:
      batch: `input_image`, `input_origins`, `input_directions`
        `[batch, views, H, W, 3]`; `target_origins`, `target_directions`
        `[batch, rays, 3]`.
      train: Training mode (passed to the corrector).

    Returns:
      `reconstruction [batch, rays, 3]`, `masks [batch, rays, num_slots]`,
      `slots [batch, num_slots, slot_size]`, their 3D `positions [batch,
      num_slots, 3]` (`triangulate` from the last iteration's attention) and
      the corrector's `attention [batch, num_iterations, num_slots, num_latents]`.
    """
    latents = self.encoder(batch["input_image"], batch["input_origins"],
                           batch["input_directions"])
    slots = self.initializer(latents.shape[0])
    slots, attention = remat.call(self.corrector, slots, latents, remat=self.remat,
                                  train=train)
    weights = attention[:, -1] / (jnp.sum(attention[:, -1], axis=-1, keepdims=True) + 1e-8)
    positions = triangulate(weights, *self.encoder.token_rays(batch["input_origins"],
                                                              batch["input_directions"]))
    origins, directions = batch["target_origins"], batch["target_directions"]
    chunk = self.ray_chunk_size or origins.shape[1]
    parts = [remat.call(self.decoder, slots, positions, origins[:, start:start + chunk],
                        directions[:, start:start + chunk], remat=self.remat)
             for start in range(0, origins.shape[1], chunk)]
    return {"reconstruction": jnp.concatenate([p["rgb"] for p in parts], axis=1),
            "masks": jnp.concatenate([p["masks"] for p in parts], axis=1), "slots": slots,
            "positions": positions, "attention": attention}


def build_osrt(config: ml_collections.ConfigDict) -> OSRT:
  """OSRT from `config.model` (encoder, initializer, corrector, decoder, ray_encoding)."""
  model = config.model
  models.check_slots(model)
  if model.encoder.get("ray_input", "pixels") not in RAY_INPUTS:
    raise ConfigError(f"model.encoder.ray_input must be one of {RAY_INPUTS}, got "
                      f"{model.encoder.ray_input!r}.")
  if model.decoder.get("render_input", "rays") not in RENDER_INPUTS:
    raise ConfigError(f"model.decoder.render_input must be one of {RENDER_INPUTS}, got "
                      f"{model.decoder.render_input!r}.")
  for part in ("encoder", "decoder"):
    for key in ("activation", "render_activation"):
      if model[part].get(key, "relu") not in ACTIVATIONS:
        raise ConfigError(f"model.{part}.{key}={model[part][key]!r} is unknown; use one of "
                          f"{', '.join(ACTIVATIONS)}.")
  ray_encoding = RayEncoding(**model.ray_encoding)
  encoder = ENCODERS.build(model.encoder, ray_encoding=ray_encoding,
                           remat=config.get("remat", False))
  decoder = DECODERS.build(model.decoder, ray_encoding=ray_encoding)
  initializer = INITIALIZERS.build(model.initializer, num_slots=model.num_slots,
                                   slot_size=model.slot_size)
  corrector = CORRECTORS.build(model.corrector, slot_size=model.slot_size)
  return OSRT(encoder=encoder, initializer=initializer, corrector=corrector, decoder=decoder,
              ray_chunk_size=model.get("ray_chunk_size", 0), remat=config.get("remat", False))
