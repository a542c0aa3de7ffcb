"""A config's model and the shapes of its batches, without any data.

With JAX, Flax and ml_collections only (no TensorFlow, TFDS or CLU), so the
memory plan (`invariant_slots.plan`) and benchmarks/accelerator.py can build
and compile the real train step where no dataset or TensorFlow is present. The
pipelines build their models through here too.
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from invariant_slots.modules import models
from invariant_slots.modules import multiview
from invariant_slots.modules import set_prediction
from invariant_slots.modules import video
from invariant_slots.registry import ConfigError, parse_call

Array = jax.Array
Shapes = dict[str, tuple[int, ...]]

BUILDERS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    "images": models.build_model,
    "video": video.build_video_model,
    "multiview": multiview.build_osrt,
    "set_prediction": set_prediction.build_model,
}


def _pipeline(config: ml_collections.ConfigDict) -> str:
  name = config.get("pipeline", "images")
  if name not in BUILDERS:
    raise ConfigError(f"Unknown pipeline {name!r}; valid names: {', '.join(BUILDERS)}.")
  return name


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model of `config.model`; raises `ConfigError` on bad settings."""
  return BUILDERS[_pipeline(config)](config)


def _op_arguments(specs, name: str) -> tuple[list, dict]:
  """The arguments of the first op `name(...)` in the op strings `specs`."""
  for spec in specs:
    op_name, args, kwargs = parse_call(spec)
    if op_name == name:
      return args, kwargs
  raise ConfigError(f"data.preprocess_train has no {name}(...) op; the batch shape "
                    "cannot be read from the config.")


def _shapes(config: ml_collections.ConfigDict, batch_size: int, train: bool) -> Shapes:
  """Per-key shapes of a training batch (`train`) or of a one-example init batch."""
  height, width = config.data.resolution
  pipeline = _pipeline(config)
  if pipeline in ("images", "set_prediction"):
    shapes = {"image": (batch_size, height, width, 3)}
    if pipeline == "set_prediction" and train:
      properties = config.data.properties
      size = set_prediction.property_size(properties.num_coords, properties.category_sizes)
      shapes["target"] = (batch_size, config.model.num_slots, size)
    return shapes
  if pipeline == "video":
    frames = 1
    if train:
      args, kwargs = _op_arguments(config.data.preprocess_train,
                                   "temporal_random_strided_window")
      frames = kwargs.get("length", args[0] if args else None)
    max_instances = config.data.max_instances
    shapes = {"video": (batch_size, frames, height, width, 3),
              "boxes": (batch_size, frames, max_instances, 4),
              "centers": (batch_size, frames, max_instances, 2)}
    if train:
      shapes.update({name: (batch_size, frames, height, width, channels)
                     for name, channels in config.model.targets.items() if name != "video"})
    return shapes
  views = (batch_size, config.data.num_input_views, height, width, 3)
  num_rays = _op_arguments(config.data.preprocess_train, "multiview_train")[0][1] if train else 16
  rays = (batch_size, num_rays, 3)
  shapes = {"input_image": views, "input_origins": views, "input_directions": views,
            "target_origins": rays, "target_directions": rays}
  if train:
    shapes["target_color"] = rays
  return shapes


def example_batch(config: ml_collections.ConfigDict) -> dict[str, Array]:
  """A one-example batch of zeros with the model's input keys, for `init`."""
  return {k: jnp.zeros(s, jnp.float32) for k, s in _shapes(config, 1, train=False).items()}


def train_batch(config: ml_collections.ConfigDict,
                batch_size: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
  """Abstract training batch (model inputs and loss targets), `config.batch_size` rows."""
  shapes = _shapes(config, batch_size or config.batch_size, train=True)
  return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
