"""Cross-attention between slots (queries) and encoder features (keys, values)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def attention_weights(logits: Array, inverted: bool, epsilon: float = 1e-8) -> Array:
  """Normalises attention logits `[..., num_queries, num_keys]`.

  Standard attention takes a softmax over keys. Inverted attention (Slot
  Attention) takes the softmax over queries, so slots compete for each input,
  then renormalises over keys, so each slot reads a weighted mean of inputs.

  Args:
    logits: `[..., num_queries, num_keys]`.
    inverted: Softmax over queries plus renormalisation when True.
    epsilon: Added before renormalising (inverted only).

  Returns:
    `(weights, assignment)`, both `[..., num_queries, num_keys]`: the weights
    that mix the values, and the per-input assignment over queries (equal to
    the weights for standard attention).
  """
  if not inverted:
    weights = jax.nn.softmax(logits, axis=-1)
    return weights, weights
  assignment = jax.nn.softmax(logits, axis=-2)
  weights = assignment + epsilon
  weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  return weights, assignment


class SlotCrossAttention(nn.Module):
  """Multi-head dot-product attention from slots to inputs.

  Keys and values are projected by `project_inputs` once and reused across
  iterations; `__call__` projects the queries and reads the values.
  """

  qkv_size: int
  num_heads: int = 1
  inverted: bool = True
  epsilon: float = 1e-8
  out_size: int | None = None

  def setup(self):
    head_dim = self.qkv_size // self.num_heads
    if head_dim * self.num_heads != self.qkv_size:
      raise ValueError(
          f"qkv_size {self.qkv_size} is not divisible by num_heads {self.num_heads}.")
    dense = lambda name: nn.DenseGeneral(  # pylint: disable=g-long-lambda
        (self.num_heads, head_dim), use_bias=False, name=name)
    self.query = dense("query")
    self.key = dense("key")
    self.value = dense("value")
    if self.out_size is not None:
      self.output = nn.DenseGeneral(self.out_size, axis=(-2, -1), use_bias=False)

  def project_inputs(self, inputs: Array) -> tuple[Array, Array]:
    """`[batch, num_inputs, dim]` -> keys, values `[batch, num_inputs, heads, head_dim]`."""
    return self.key(inputs), self.value(inputs)

  def __call__(self, slots: Array, keys: Array, values: Array) -> tuple[Array, Array]:
    """Reads the inputs for each slot.

    Args:
      slots: `[batch, num_slots, dim]` (already normalised).
      keys: `[batch, num_inputs, heads, head_dim]`.
      values: `[batch, num_inputs, heads, head_dim]`.

    Returns:
      updates `[batch, num_slots, out_size or qkv_size]`, and the assignment `[batch, num_slots, num_inputs]`
      averaged over heads.
    """
    queries = self.query(slots)
    queries = queries / jnp.sqrt(queries.shape[-1]).astype(queries.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", queries, keys)
    weights, assignment = attention_weights(logits, self.inverted, self.epsilon)
    updates = jnp.einsum("bhqk,bkhd->bqhd", weights, values)
    if self.out_size is not None:
      updates = self.output(updates)
    else:
      updates = updates.reshape(updates.shape[:2] + (-1,))
    return updates, assignment.mean(axis=1)
