"""Correctors: modules that refine slots against encoder features.

Every corrector maps `slots [batch, num_slots, slot_size]` and
`inputs [batch, num_inputs, input_size]` to refined slots of the same shape and
the attention of every iteration, `[batch, num_iterations, num_slots,
num_inputs]` (each input's assignment over slots). A new corrector is one class
registered in `CORRECTORS`; configs select it by name
(`config.model.corrector.name`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from invariant_slots.modules.attention import SlotCrossAttention
from invariant_slots.registry import Registry

Array = jax.Array

CORRECTORS: Registry[nn.Module] = Registry("corrector")


class ResidualMLP(nn.Module):
  """`x + MLP(LayerNorm(x))` over the last axis."""

  hidden_size: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = nn.LayerNorm()(x)
    y = nn.relu(nn.Dense(self.hidden_size)(y))
    return x + nn.Dense(x.shape[-1])(y)


@CORRECTORS.register("SA")
class SlotAttention(nn.Module):
  """Slot Attention (Locatello et al. 2020), weights shared across iterations.

  Each iteration: inverted attention from normalised slots to the inputs, a GRU
  (or a residual sum when `use_gru` is False) and a residual MLP.
  """

  slot_size: int
  num_iterations: int = 3
  mlp_size: int = 128
  num_heads: int = 1
  epsilon: float = 1e-8
  use_gru: bool = True

  def setup(self):
    self.norm_inputs = nn.LayerNorm()
    self.norm_slots = nn.LayerNorm()
    self.attention = SlotCrossAttention(
        qkv_size=self.slot_size, num_heads=self.num_heads, inverted=True,
        epsilon=self.epsilon)
    if self.use_gru:
      self.gru = nn.GRUCell(features=self.slot_size)
    self.mlp = ResidualMLP(self.mlp_size)

  def step(self, slots: Array, keys: Array, values: Array) -> tuple[Array, Array]:
    """One iteration: `[batch, num_slots, slot_size]` -> same, plus attention."""
    updates, assignment = self.attention(self.norm_slots(slots), keys, values)
    if self.use_gru:
      slots, _ = self.gru(slots, updates)
    else:
      slots = slots + updates
    return self.mlp(slots), assignment

  def __call__(self, slots: Array, inputs: Array,
               train: bool = False) -> tuple[Array, Array]:
    del train  # Same computation in training and inference.
    keys, values = self.attention.project_inputs(self.norm_inputs(inputs))
    attention = []
    for _ in range(self.num_iterations):
      slots, assignment = self.step(slots, keys, values)
      attention.append(assignment)
    return slots, jnp.stack(attention, axis=1)


@CORRECTORS.register("SA-noGRU")
class SlotAttentionNoGRU(SlotAttention):
  """Slot Attention with a residual update in place of the GRU."""

  use_gru: bool = False


@CORRECTORS.register("SA-ID")
class ImplicitSlotAttention(SlotAttention):
  """Slot Attention with implicit differentiation (Chang et al. 2022).

  Runs `num_iterations - 1` iterations without gradient to approach the fixed
  point, then one differentiable iteration from the stopped slots (first-order
  Neumann approximation of the implicit gradient). Backward time and memory do
  not grow with the number of iterations. The initial slots receive the
  gradient of the final step through a straight-through connection.
  """

  def __call__(self, slots: Array, inputs: Array,
               train: bool = False) -> tuple[Array, Array]:
    del train
    keys, values = self.attention.project_inputs(self.norm_inputs(inputs))
    initial = slots
    attention = []
    for _ in range(self.num_iterations - 1):
      slots, assignment = self.step(jax.lax.stop_gradient(slots), keys, values)
      attention.append(assignment)
    fixed_point = jax.lax.stop_gradient(slots)
    slots = fixed_point + initial - jax.lax.stop_gradient(initial)
    slots, assignment = self.step(slots, keys, values)
    attention.append(assignment)
    return slots, jax.lax.stop_gradient(jnp.stack(attention, axis=1))


class CrossAttentionLayer(nn.Module):
  """Pre-LN cross-attention layer; slots are the queries.

  `slots <- slots + Attn(LN(slots), LN(inputs))` (a GRU instead of the sum when
  `use_gru`), then `slots <- slots + MLP(LN(slots))`.
  """

  slot_size: int
  mlp_size: int
  num_heads: int
  inverted: bool
  use_gru: bool
  epsilon: float

  @nn.compact
  def __call__(self, slots: Array, inputs: Array) -> tuple[Array, Array]:
    attention = SlotCrossAttention(
        qkv_size=self.slot_size, num_heads=self.num_heads,
        inverted=self.inverted, epsilon=self.epsilon, out_size=self.slot_size)
    keys, values = attention.project_inputs(nn.LayerNorm()(inputs))
    updates, assignment = attention(nn.LayerNorm()(slots), keys, values)
    if self.use_gru:
      slots, _ = nn.GRUCell(features=self.slot_size)(slots, updates)
    else:
      slots = slots + updates
    return ResidualMLP(self.mlp_size)(slots), assignment


@CORRECTORS.register("TF")
class TransformerCorrector(nn.Module):
  """Stack of `num_iterations` cross-attention layers with their own weights.

  With `inverted` the softmax runs over slots and is renormalised over inputs
  (TF-Inv); with `use_gru` a per-layer GRU replaces the attention residual
  (TF-Inv+GRU).
  """

  slot_size: int
  num_iterations: int = 3
  mlp_size: int = 128
  num_heads: int = 1
  epsilon: float = 1e-8
  inverted: bool = False
  use_gru: bool = False

  @nn.compact
  def __call__(self, slots: Array, inputs: Array,
               train: bool = False) -> tuple[Array, Array]:
    del train
    attention = []
    for index in range(self.num_iterations):
      slots, assignment = CrossAttentionLayer(
          slot_size=self.slot_size, mlp_size=self.mlp_size,
          num_heads=self.num_heads, inverted=self.inverted,
          use_gru=self.use_gru, epsilon=self.epsilon,
          name=f"layer_{index}")(slots, inputs)
      attention.append(assignment)
    return slots, jnp.stack(attention, axis=1)


@CORRECTORS.register("TF-Inv")
class InvertedTransformerCorrector(TransformerCorrector):
  """Transformer corrector with inverted attention."""

  inverted: bool = True


@CORRECTORS.register("TF-Inv+GRU")
class InvertedTransformerGRUCorrector(TransformerCorrector):
  """Inverted-attention Transformer corrector with per-layer GRUs."""

  inverted: bool = True
  use_gru: bool = True
