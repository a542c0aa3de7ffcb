"""Slot initialisers: produce `[batch, num_slots, slot_size]` starting slots."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from invariant_slots.registry import Registry

Array = jax.Array

INITIALIZERS: Registry[nn.Module] = Registry("slot initializer")


@INITIALIZERS.register("gaussian")
class GaussianSlots(nn.Module):
  """Samples every slot from one learned diagonal Gaussian (rng stream 'slots')."""

  num_slots: int
  slot_size: int

  @nn.compact
  def __call__(self, batch_size: int) -> Array:
    mean = self.param("mean", nn.initializers.xavier_uniform(), (1, 1, self.slot_size))
    log_std = self.param("log_std", nn.initializers.xavier_uniform(),
                         (1, 1, self.slot_size))
    noise = jax.random.normal(self.make_rng("slots"),
                              (batch_size, self.num_slots, self.slot_size))
    return mean + jnp.exp(log_std) * noise


@INITIALIZERS.register("learned")
class LearnedSlots(nn.Module):
  """One learned embedding per slot, the same for every example."""

  num_slots: int
  slot_size: int

  @nn.compact
  def __call__(self, batch_size: int) -> Array:
    slots = self.param("slots", nn.initializers.normal(1.0),
                       (self.num_slots, self.slot_size))
    return jnp.broadcast_to(slots, (batch_size,) + slots.shape)
