"""SAVi / SAVi++ video model: conditioned slots tracked through frames.

Per frame t: encoder features -> corrector(slots_t, features_t) -> decoded
targets and alpha masks; the predictor (a Transformer block over slots) maps
the corrected slots to the next frame's starting slots. The frame loop is an
`nn.scan` carrying the slots. The first frame's slots come from the
conditioning (per-object boxes or centres of mass); a later call can continue
from the `next_slots` of the previous one (evaluation in slices).

The encoder (`ENCODERS`: "CNN" for SAVi-S, "ResNet34" for SAVi++), corrector
(`CORRECTORS`, any) and decoder (`DECODERS`) are named in the config.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from invariant_slots.modules import models
from invariant_slots.modules import remat
from invariant_slots.modules.attention import TransformerBlock
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.modules.decoders import DECODERS
from invariant_slots.modules.encoders import ENCODERS
from invariant_slots.modules.initializers import INITIALIZERS
from invariant_slots.registry import ConfigError, Registry

Array = jax.Array

CONDITIONING_KEYS = {"boxes": "boxes", "center_of_mass": "centers"}


PREDICTORS: Registry[nn.Module] = Registry("predictor")


@INITIALIZERS.register("conditioned")
class ConditionedSlots(nn.Module):
  """First-frame slots from per-object conditioning (SAVi).

  Each object's box `(ymin, xmin, ymax, xmax)` (or centre of mass `(y, x)`;
  -1 for absent objects) goes through an MLP (`hidden_size` -> `slot_size`).
  With `background_slot` a background slot is prepended, so `num_slots =
  max_instances + 1`: the same MLP applied to an all-zero box when
  `zero_box_background` (SAVi++), else a learned vector.
  """

  slot_size: int
  hidden_size: int = 256
  conditioning: str = "boxes"
  background_slot: bool = True
  zero_box_background: bool = False

  @nn.compact
  def __call__(self, batch: dict[str, Array]) -> Array:
    """`batch[boxes or centers] [batch, T, max_instances, 4 or 2]` -> `[batch, num_slots,
    slot_size]`."""
    condition = batch[CONDITIONING_KEYS[self.conditioning]][:, 0].astype(jnp.float32)
    learned_background = self.background_slot and not self.zero_box_background
    if self.background_slot and self.zero_box_background:
      condition = jnp.concatenate([jnp.zeros_like(condition[:, :1]), condition], axis=1)
    hidden = nn.relu(nn.Dense(self.hidden_size)(condition))
    slots = nn.Dense(self.slot_size)(hidden)
    if learned_background:
      background = self.param("background", nn.initializers.normal(1.0), (self.slot_size,))
      background = jnp.broadcast_to(background, (slots.shape[0], 1, self.slot_size))
      slots = jnp.concatenate([background, slots], axis=1)
    return slots


@PREDICTORS.register("Transformer")
def transformer_predictor(num_heads: int = 4, mlp_size: int = 256, qkv_size: int | None = None,
                          pre_norm: bool = False,
                          zero_init_residual: bool = False) -> TransformerBlock:
  """SAVi's predictor: a Transformer block over the slots, post-LN by default.

  `qkv_size` None uses the slot size. Without position information it is
  equivariant to permutations of the slots. `zero_init_residual` starts its
  attention and MLP outputs at zero: the post-LN block then only normalises
  each slot, and does not mix them.
  """
  return TransformerBlock(num_heads=num_heads, mlp_size=mlp_size, qkv_size=qkv_size,
                          pre_norm=pre_norm, zero_init_residual=zero_init_residual)


class SlotRecurrence(nn.Module):
  """Corrector then predictor at every frame, scanned over the time axis."""

  corrector: nn.Module
  predictor: nn.Module
  remat: bool = False  # Recompute each frame's corrector in the backward pass.

  @functools.partial(
      nn.scan, in_axes=(1, nn.broadcast), out_axes=1, variable_broadcast="params",
      split_rngs={"params": False, "slots": False})
  def __call__(self, slots: Array, inputs: Array, train: bool) -> tuple[Array, tuple[Array, Array]]:
    """Scans `inputs [batch, T, N, D]` from `slots [batch, K, slot_size]`.

    Returns:
      `(next_slots [batch, K, slot_size], (corrected [batch, T, K, slot_size],
      attention [batch, T, iterations, K, N]))`.
    """
    corrected, attention = remat.call(self.corrector, slots, inputs, remat=self.remat,
                                      train=train)
    return self.predictor(corrected), (corrected, attention)


class VideoModel(nn.Module):
  """SAVi(++) autoencoder of videos through tracked slots."""

  encoder: nn.Module
  initializer: nn.Module
  recurrence: nn.Module
  decoder: nn.Module
  targets: Sequence[tuple[str, int]]
  remat: bool = False  # Recompute encoder and decoder in the backward pass.

  def initial_slots(self, batch: dict[str, Array]) -> Array:
    """The first frame's slots `[batch, K, slot_size]` from the conditioning."""
    return self.initializer(batch)

  def __call__(self, batch: dict[str, Array], train: bool = False,
               slots: Array | None = None) -> dict[str, Array]:
    """Runs the model on `batch["video"] [batch, T, H, W, 3]`.

    Args:
      batch: The video and, when `slots` is None, the conditioning.
      train: Training mode.
      slots: Starting slots `[batch, K, slot_size]` (e.g. `next_slots` of the
        previous slice); None conditions on the first frame.

    Returns:
      One entry per target `[batch, T, H, W, channels]`, `masks [batch, T, K,
      H, W, 1]`, `slot_outputs [batch, T, K, H, W, C]` (all targets), `slots
      [batch, T, K, slot_size]`, `next_slots [batch, K, slot_size]` and
      `attention [batch, T, iterations, K, h, w]`.
    """
    video = batch["video"]
    batch_size, num_frames = video.shape[:2]
    features = remat.call(self.encoder, video.reshape((-1,) + video.shape[2:]),
                          remat=self.remat, train=train)
    _, height, width, channels = features.shape
    inputs = features.reshape(batch_size, num_frames, height * width, channels)
    if slots is None:
      slots = self.initializer(batch)
    next_slots, (corrected, attention) = self.recurrence(slots, inputs, train)
    num_slots, slot_size = corrected.shape[2:]
    decoded = remat.call(self.decoder, corrected.reshape(-1, num_slots, slot_size),
                         remat=self.remat)
    unflatten = lambda x: x.reshape((batch_size, num_frames) + x.shape[1:])
    reconstruction = unflatten(decoded["reconstruction"])
    outputs = {}
    start = 0
    for name, size in self.targets:
      outputs[name] = reconstruction[..., start:start + size]
      start += size
    outputs.update(
        masks=unflatten(decoded["masks"]), slot_outputs=unflatten(decoded["slot_outputs"]),
        slots=corrected, next_slots=next_slots,
        attention=attention.reshape(attention.shape[:4] + (height, width)))
    return outputs


def build_video_model(config: ml_collections.ConfigDict) -> VideoModel:
  """Builds `config.model` for the video pipeline; `ConfigError` on bad settings."""
  model = config.model
  models.check_slots(model)
  slot_size = model.slot_size
  initializer = dict(model.initializer)
  if initializer.get("name") != "conditioned":
    raise ConfigError(f"Video slots start from the objects' boxes or centres: set "
                      f"model.initializer.name='conditioned' (got {initializer.get('name')!r}).")
  expected = config.data.max_instances + int(initializer.get("background_slot", True))
  if model.num_slots != expected:
    raise ConfigError(
        f"model.num_slots={model.num_slots} but the conditioning gives {expected} slots "
        f"(data.max_instances={config.data.max_instances} objects plus "
        f"{int(initializer.get('background_slot', True))} background); make them agree.")
  conditioning = initializer.get("conditioning", "boxes")
  if conditioning not in CONDITIONING_KEYS:
    raise ConfigError(f"model.initializer.conditioning={conditioning!r}; use one of "
                      f"{', '.join(CONDITIONING_KEYS)}.")
  predictor_qkv = model.predictor.get("qkv_size") or slot_size
  if predictor_qkv % model.predictor.num_heads:
    raise ConfigError(f"The predictor's qkv size {predictor_qkv} is not divisible by "
                      f"model.predictor.num_heads={model.predictor.num_heads}; change "
                      "model.predictor.qkv_size (default: model.slot_size) or num_heads.")
  targets = tuple((name, int(size)) for name, size in model.targets.items())
  initializer_module = INITIALIZERS.build(initializer, slot_size=slot_size)
  predictor = PREDICTORS.build(model.predictor)
  decoder = DECODERS.build(model.decoder, output_channels=sum(s for _, s in targets))
  resolution = tuple(config.data.resolution)
  if tuple(decoder.output_size) != resolution:
    raise ConfigError(
        f"The decoder renders {tuple(decoder.output_size)} pixels but frames are "
        f"{resolution}; change model.decoder.broadcast_size or strides, or data.resolution.")
  return VideoModel(
      encoder=ENCODERS.build(model.encoder, output_size=slot_size),
      initializer=initializer_module,
      recurrence=SlotRecurrence(
          corrector=CORRECTORS.build(model.corrector, slot_size=slot_size),
          predictor=predictor, remat=config.get("remat", False)),
      decoder=decoder, targets=targets, remat=config.get("remat", False))
