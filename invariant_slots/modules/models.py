"""Complete models assembled from registered parts."""

import flax.linen as nn
import jax
import ml_collections

from invariant_slots.modules import remat
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.modules.decoders import DECODERS
from invariant_slots.modules.encoders import ENCODERS
from invariant_slots.modules.initializers import INITIALIZERS
from invariant_slots.registry import ConfigError

Array = jax.Array


class ObjectDiscoveryModel(nn.Module):
  """Image autoencoder through slots: encoder, initialiser, corrector, decoder."""

  encoder: nn.Module
  initializer: nn.Module
  corrector: nn.Module
  decoder: nn.Module
  remat: bool = False  # Recompute encoder, corrector and decoder in the backward pass.

  def __call__(self, batch: dict[str, Array], train: bool = False) -> dict[str, Array]:
    """Runs the model on `batch["image"]` `[batch, H, W, 3]`.

    Returns:
      `reconstruction [batch, H, W, 3]`, `masks [batch, num_slots, H, W, 1]`,
      `slot_outputs [batch, num_slots, H, W, 3]`, `slots [batch, num_slots,
      slot_size]` and `attention [batch, num_iterations, num_slots, h, w]` on the
      encoder's feature grid.
    """
    image = batch["image"]
    features = remat.call(self.encoder, image, remat=self.remat, train=train)
    batch_size, height, width, _ = features.shape
    inputs = features.reshape(batch_size, height * width, -1)
    slots = self.initializer(batch_size)
    slots, attention = remat.call(self.corrector, slots, inputs, remat=self.remat, train=train)
    outputs = remat.call(self.decoder, slots, remat=self.remat)
    outputs["slots"] = slots
    outputs["attention"] = attention.reshape(attention.shape[:3] + (height, width))
    return outputs


def check_slots(model_config: ml_collections.ConfigDict) -> None:
  """The checks every slot model shares: at least one slot, one unit, one iteration."""
  for key in ("num_slots", "slot_size"):
    if model_config[key] < 1:
      raise ConfigError(f"model.{key} must be >= 1, got {model_config[key]}.")
  num_iterations = model_config.corrector.get("num_iterations", 1)
  if num_iterations < 1:
    raise ConfigError(f"model.corrector.num_iterations must be >= 1, got {num_iterations}.")


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """Builds `config.model` (the parts are named by string in the config)."""
  model_config = config.model
  check_slots(model_config)
  slot_size = model_config.slot_size
  encoder = ENCODERS.build(model_config.encoder, output_size=slot_size)
  initializer = INITIALIZERS.build(
      model_config.initializer, num_slots=model_config.num_slots, slot_size=slot_size)
  corrector = CORRECTORS.build(model_config.corrector, slot_size=slot_size)
  decoder = DECODERS.build(model_config.decoder)
  resolution = tuple(config.data.resolution)
  if tuple(decoder.output_size) != resolution:
    raise ConfigError(
        f"The decoder renders {tuple(decoder.output_size)} pixels (broadcast_size "
        f"{tuple(decoder.broadcast_size)} x strides {tuple(decoder.strides)}) but "
        f"images are {resolution}; change model.decoder.broadcast_size or "
        "model.decoder.strides, or data.resolution.")
  return ObjectDiscoveryModel(encoder=encoder, initializer=initializer,
                              corrector=corrector, decoder=decoder,
                              remat=config.get("remat", False))
