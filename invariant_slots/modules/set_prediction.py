"""Set prediction model: image -> slots -> one property vector per slot.

The property vector of a slot is laid out as in the targets of the set
prediction pipeline (`config.data.properties`):

  [coordinates (num_coords) | one score per class of each categorical
   attribute (category_sizes) | presence (1)]

every entry in [0, 1] (sigmoid), as in Locatello et al. (2020), section 4.2.
"""

from typing import Sequence

import flax.linen as nn
import jax
import ml_collections

from invariant_slots.modules import models
from invariant_slots.modules import remat
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.modules.encoders import ENCODERS
from invariant_slots.modules.initializers import INITIALIZERS
from invariant_slots.registry import ConfigError

Array = jax.Array


def property_size(num_coords: int, category_sizes: Sequence[int]) -> int:
  """Length of one property vector: coordinates, class scores, presence."""
  return num_coords + sum(category_sizes) + 1


class PropertyHead(nn.Module):
  """Per-slot MLP: `[..., slot_size]` -> `[..., output_size]` in [0, 1]."""

  hidden_size: int
  output_size: int

  @nn.compact
  def __call__(self, slots: Array) -> Array:
    hidden = nn.relu(nn.Dense(self.hidden_size)(slots))
    return nn.sigmoid(nn.Dense(self.output_size)(hidden))


class SetPredictionModel(nn.Module):
  """Encoder, slot initialiser, corrector and a shared per-slot property head."""

  encoder: nn.Module
  initializer: nn.Module
  corrector: nn.Module
  head: nn.Module
  remat: bool = False  # Recompute encoder and corrector in the backward pass.

  def __call__(self, batch: dict[str, Array], train: bool = False) -> dict[str, Array]:
    """Runs the model on `batch["image"]` `[batch, H, W, 3]`.

    Returns:
      `set_prediction [batch, num_slots, property_size]`, `slots [batch,
      num_slots, slot_size]` and `attention [batch, num_iterations, num_slots,
      h, w]` on the encoder's feature grid.
    """
    features = remat.call(self.encoder, batch["image"], remat=self.remat, train=train)
    batch_size, height, width, _ = features.shape
    inputs = features.reshape(batch_size, height * width, -1)
    slots = self.initializer(batch_size)
    slots, attention = remat.call(self.corrector, slots, inputs, remat=self.remat, train=train)
    return {
        "set_prediction": self.head(slots),
        "slots": slots,
        "attention": attention.reshape(attention.shape[:3] + (height, width)),
    }


def build_model(config: ml_collections.ConfigDict) -> SetPredictionModel:
  """Builds `config.model` for the property layout of `config.data.properties`."""
  model_config = config.model
  properties = config.data.properties
  models.check_slots(model_config)
  if properties.num_coords < 0 or any(size < 2 for size in properties.category_sizes):
    raise ConfigError("data.properties needs num_coords >= 0 and every category size >= 2, "
                      f"got {properties.num_coords} and {tuple(properties.category_sizes)}.")
  slot_size = model_config.slot_size
  encoder = ENCODERS.build(model_config.encoder, output_size=slot_size)
  initializer = INITIALIZERS.build(
      model_config.initializer, num_slots=model_config.num_slots, slot_size=slot_size)
  corrector = CORRECTORS.build(model_config.corrector, slot_size=slot_size)
  head = PropertyHead(
      hidden_size=model_config.head_hidden_size,
      output_size=property_size(properties.num_coords, properties.category_sizes))
  return SetPredictionModel(encoder=encoder, initializer=initializer, corrector=corrector,
                            head=head, remat=config.get("remat", False))
