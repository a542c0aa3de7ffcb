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


ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,  # tanh approximation.
    "gelu_exact": lambda x: nn.gelu(x, approximate=False),
    "leaky_relu": nn.leaky_relu,  # negative slope 0.01.
}


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention (softmax over keys).

  Queries come from `x`, keys and values from `context` (or `x`); each is
  projected to `num_heads` heads of `qkv_size // num_heads` features (with
  biases when `qkv_bias`), and the heads are projected back to the width of `x`
  with a bias. With `qkv_bias` it has the parameters of
  `flax.linen.MultiHeadDotProductAttention`. `zero_output` starts the output
  projection at zero.
  """

  num_heads: int
  qkv_size: int | None = None  # None: the width of `x`.
  qkv_bias: bool = True
  zero_output: bool = False

  @nn.compact
  def __call__(self, x: Array, context: Array | None = None) -> Array:
    """`x [batch, n, dim]`, `context [batch, m, dim_c]` -> `[batch, n, dim]`."""
    context = x if context is None else context
    qkv_size = self.qkv_size or x.shape[-1]
    if qkv_size % self.num_heads:
      raise ValueError(f"qkv_size {qkv_size} is not divisible by num_heads {self.num_heads}.")
    dense = lambda name: nn.DenseGeneral(  # pylint: disable=g-long-lambda
        (self.num_heads, qkv_size // self.num_heads), use_bias=self.qkv_bias, name=name)
    queries, keys, values = dense("query")(x), dense("key")(context), dense("value")(context)
    queries = queries / jnp.sqrt(queries.shape[-1]).astype(queries.dtype)
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", queries, keys), axis=-1)
    heads = jnp.einsum("bhqk,bkhd->bqhd", weights, values)
    kernel_init = nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
    return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), kernel_init=kernel_init, name="out")(heads)


class TransformerBlock(nn.Module):
  """Transformer block: attention (self, or cross to `context`) and an MLP.

  Pre-LN (`pre_norm`): `x += Attn(LN(x), context or LN(x))`, `x += MLP(LN(x))`.
  Post-LN: `x = LN(x + Attn(x, context or x))`, `x = LN(x + MLP(x))`. The
  context enters unnormalised. The MLP is `Dense(mlp_size)`, `activation`,
  `Dense(dim)`. Without position information, the block is equivariant to
  permutations of `x`. `zero_init_residual` starts the attention's and the
  MLP's output projections at zero, so that a pre-LN block starts as the
  identity (same parameters, another initialisation).
  """

  num_heads: int
  mlp_size: int
  qkv_size: int | None = None
  pre_norm: bool = True
  qkv_bias: bool = True
  activation: str = "relu"
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: Array, context: Array | None = None) -> Array:
    """`[batch, n, dim]` (and `context [batch, m, dim_c]`) -> `[batch, n, dim]`."""
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {self.activation!r}; use one of "
                       f"{', '.join(ACTIVATIONS)}.")
    attention = MultiHeadAttention(self.num_heads, self.qkv_size, self.qkv_bias,
                                   zero_output=self.zero_init_residual)
    hidden = nn.Dense(self.mlp_size, name="mlp_hidden")
    output = nn.Dense(x.shape[-1], name="mlp_output", kernel_init=(
        nn.initializers.zeros if self.zero_init_residual else nn.initializers.lecun_normal()))
    mlp = lambda y: output(ACTIVATIONS[self.activation](hidden(y)))
    if self.pre_norm:
      y = nn.LayerNorm()(x)
      x = x + attention(y, y if context is None else context)
      return x + mlp(nn.LayerNorm()(x))
    x = nn.LayerNorm()(x + attention(x, context))
    return nn.LayerNorm()(x + mlp(x))


class TransformerStack(nn.Module):
  """Base of the modules built around `num_layers` Transformer blocks.

  Each block has `num_heads` heads of `qkv_size` features in all (None: the
  input width), `qkv_bias`, and an MLP of `mlp_size` with `activation`.
  """

  num_layers: int = 2
  num_heads: int = 4
  qkv_size: int | None = None
  qkv_bias: bool = True
  mlp_size: int = 512
  activation: str = "gelu"

  def transformer_block(self, name: str) -> TransformerBlock:
    """A pre-LN `TransformerBlock` with these options, named `name`."""
    return TransformerBlock(self.num_heads, self.mlp_size, self.qkv_size,
                            qkv_bias=self.qkv_bias, activation=self.activation, name=name)
