"""Training losses, configured as `config.losses = {name: {type, prediction, target, weight}}`."""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from invariant_slots.registry import ConfigError

Array = jax.Array


def mse(prediction: Array, target: Array) -> Array:
  """Mean squared error per example: `[batch, ...]` -> `[batch]`."""
  return jnp.mean(jnp.square(prediction - target).reshape(prediction.shape[0], -1), axis=-1)


def l1(prediction: Array, target: Array) -> Array:
  """Mean absolute error per example: `[batch, ...]` -> `[batch]`."""
  return jnp.mean(jnp.abs(prediction - target).reshape(prediction.shape[0], -1), axis=-1)


LOSS_FUNCTIONS: dict[str, Callable[[Array, Array], Array]] = {"mse": mse, "l1": l1}


def per_example_loss(losses: ml_collections.ConfigDict, outputs: dict[str, Array],
                     batch: dict[str, Array]) -> Array:
  """Weighted sum of the configured losses, `[batch]`."""
  total = 0.0
  for name, spec in losses.items():
    if spec.type not in LOSS_FUNCTIONS:
      raise ConfigError(f"Unknown loss type {spec.type!r} in losses.{name}; valid types: "
                        f"{', '.join(LOSS_FUNCTIONS)}.")
    total = total + spec.weight * LOSS_FUNCTIONS[spec.type](
        outputs[spec.prediction], batch[spec.target])
  return total
