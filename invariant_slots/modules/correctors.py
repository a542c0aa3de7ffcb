"""Correctors: modules that refine slots against encoder features.

Every corrector maps `slots [batch, num_slots, slot_size]` and
`inputs [batch, num_inputs, input_size]` to refined slots of the same shape and
the attention of every iteration, `[batch, num_iterations, num_slots,
num_inputs]` (each input's assignment over slots). A new corrector is one class
registered in `CORRECTORS`; configs select it by name
(`config.model.corrector.name`).
"""

import functools
from typing import Any, Callable

import diffrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import lineax
import numpy as np

from invariant_slots.modules.attention import SlotCrossAttention
from invariant_slots.registry import ConfigError, Registry

Array = jax.Array

CORRECTORS: Registry[nn.Module] = Registry("corrector")


class ResidualMLP(nn.Module):
  """`x + MLP(LayerNorm(x))` over the last axis; the identity when `hidden_size` is 0."""

  hidden_size: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if not self.hidden_size:
      return x
    y = nn.LayerNorm()(x)
    y = nn.relu(nn.Dense(self.hidden_size)(y))
    return x + nn.Dense(x.shape[-1])(y)


def slot_attention_readout(slot_size: int, qkv_size: int | None, num_heads: int,
                           epsilon: float, project: bool) -> SlotCrossAttention:
  """Inverted attention from slots to inputs (softmax over slots, weighted mean over
  inputs); with `project`, updates of `qkv_size` other than `slot_size` are projected
  to `slot_size`."""
  qkv_size = qkv_size or slot_size
  return SlotCrossAttention(
      qkv_size=qkv_size, num_heads=num_heads, inverted=True, epsilon=epsilon,
      out_size=slot_size if project and qkv_size != slot_size else None)


class AttentionCorrector(nn.Module):
  """Options shared by the attention correctors (SA and TF families).

  `qkv_size` None uses `slot_size`; `mlp_size` 0 drops the residual MLP.
  """

  slot_size: int
  num_iterations: int = 3
  mlp_size: int = 128
  qkv_size: int | None = None
  num_heads: int = 1
  epsilon: float = 1e-8


@CORRECTORS.register("SA")
class SlotAttention(AttentionCorrector):
  """Slot Attention (Locatello et al. 2020), weights shared across iterations.

  Each iteration: inverted attention from normalised slots to the inputs, a GRU
  (or a residual sum when `use_gru` is False) and a residual MLP (none when
  `mlp_size` is 0). Queries, keys and values have `qkv_size` features (default
  `slot_size`); the GRU reads the `qkv_size` updates directly, the residual
  update projects them to `slot_size` when the sizes differ.
  """

  use_gru: bool = True

  def setup(self):
    self.norm_inputs = nn.LayerNorm()
    self.norm_slots = nn.LayerNorm()
    self.attention = slot_attention_readout(self.slot_size, self.qkv_size, self.num_heads,
                                            self.epsilon, project=not self.use_gru)
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


def anderson_fixed_point(fn: Callable[[Array], Array], z: Array, num_evaluations: int,
                         memory: int = 5, regularization: float = 1e-4) -> Array:
  """Anderson acceleration (type II) of `z <- fn(z)`, each example on its own.

  Args:
    fn: Map of `[batch, ...]` arrays.
    z: Starting point `[batch, ...]`.
    num_evaluations: Calls of `fn` (the first is a plain iteration).
    memory: Past iterates mixed per step.
    regularization: Ridge term of the mixing least-squares problem.

  Returns:
    `fn` of the last mixed iterate, shaped like `z`.
  """
  shape = z.shape
  flat = lambda x: x.reshape(shape[0], -1)
  inputs, outputs = [flat(z)], [flat(fn(z))]
  for _ in range(num_evaluations - 1):
    x = jnp.stack(inputs[-memory:], axis=1)  # [batch, m, n]
    f = jnp.stack(outputs[-memory:], axis=1)
    g = f - x
    gram = jnp.einsum("bin,bjn->bij", g, g)
    gram = gram + regularization * jnp.eye(gram.shape[-1]) * (
        1.0 + jnp.trace(gram, axis1=1, axis2=2)[:, None, None])
    alpha = jnp.linalg.solve(gram, jnp.ones(gram.shape[:2] + (1,)))[..., 0]
    alpha = alpha / jnp.sum(alpha, axis=1, keepdims=True)
    z_next = jnp.einsum("bi,bin->bn", alpha, f)
    inputs.append(z_next)
    outputs.append(flat(fn(z_next.reshape(shape))))
  return outputs[-1].reshape(shape)


def broyden_fixed_point(fn: Callable[[Array], Array], z: Array,
                        num_evaluations: int) -> Array:
  """Good Broyden root finding on `fn(z) - z`, each example on its own.

  The inverse Jacobian starts at `-I` (so the first step is a plain iteration)
  and is kept in low-rank form `-I + U V^T`, one rank per step.

  Returns:
    `fn` of the last iterate, shaped like `z`.
  """
  shape = z.shape
  flat = lambda x: x.reshape(shape[0], -1)
  x = flat(z)
  residual = flat(fn(z)) - x
  us, vs = [], []

  def apply_inverse(y):  # H y with H = -I + sum_i u_i v_i^T.
    out = -y
    for u, v in zip(us, vs):
      out = out + u * jnp.sum(v * y, axis=-1, keepdims=True)
    return out

  def apply_inverse_transposed(y):  # H^T y.
    out = -y
    for u, v in zip(us, vs):
      out = out + v * jnp.sum(u * y, axis=-1, keepdims=True)
    return out

  for _ in range(num_evaluations - 1):
    step = -apply_inverse(residual)
    x = x + step
    new_residual = flat(fn(x.reshape(shape))) - x
    change = new_residual - residual
    inverse_change = apply_inverse(change)
    denominator = jnp.sum(step * inverse_change, axis=-1, keepdims=True)
    denominator = jnp.where(jnp.abs(denominator) < 1e-12, 1e-12, denominator)
    us.append((step - inverse_change) / denominator)
    vs.append(apply_inverse_transposed(step))
    residual = new_residual
  return (x + residual).reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def implicit_gradient(fn: Callable[..., Array], solver: str, max_iterations: int,
                      output: Array, fixed_point: Array, *args: Any) -> Array:
  """Identity on `output = fn(fixed_point, *args)` with the implicit gradient.

  The backward pass replaces the output's cotangent `g` with the solution `w`
  of `(I - J^T) w = g`, `J = d fn / d z` at the fixed point, so gradients
  flowing on through `output`'s own computation are the implicit-function
  gradients of the fixed point. `solver`: "fixed_point" iterates
  `w <- g + J^T w` `max_iterations` times; "gmres" uses lineax's GMRES.
  """
  del fn, solver, max_iterations, fixed_point, args
  return output


def _implicit_gradient_forward(fn, solver, max_iterations, output, fixed_point, *args):
  return output, (fixed_point, args)


def _implicit_gradient_backward(fn, solver, max_iterations, residuals, cotangent):
  fixed_point, args = residuals
  _, vjp = jax.vjp(lambda z: fn(z, *args), fixed_point)
  transposed = lambda w: vjp(w)[0]
  if solver == "fixed_point":
    solution = jax.lax.fori_loop(0, max_iterations,
                                 lambda _, w: cotangent + transposed(w), cotangent)
  else:
    operator = lineax.FunctionLinearOperator(
        lambda w: w - transposed(w), jax.eval_shape(lambda: cotangent))
    solution = lineax.linear_solve(
        operator, cotangent, lineax.GMRES(rtol=1e-6, atol=1e-6, max_steps=max_iterations),
        throw=False).value
  zeros = jax.tree.map(jnp.zeros_like, (fixed_point, args))
  return (solution, zeros[0], *zeros[1])


implicit_gradient.defvjp(_implicit_gradient_forward, _implicit_gradient_backward)


@CORRECTORS.register("SA-ID")
class ImplicitSlotAttention(SlotAttention):
  """Slot Attention with implicit differentiation (Chang et al. 2022).

  Approaches the fixed point of the Slot Attention step without gradient in
  `num_iterations - 1` step evaluations, then applies one differentiable step
  from the stopped slots. Backward time and memory do not grow with the number
  of iterations. The initial slots receive the gradient of the final step's
  input through a straight-through connection.

  `forward_solver`: "iteration" (plain steps), "anderson" or "broyden".
  `gradient`: "neumann" (first-order Neumann approximation: backpropagate
  through the last step only) or "implicit" (the full implicit gradient,
  solving `(I - J^T) w = g` at the fixed point with `backward_solver`
  "fixed_point" or "gmres" in at most `backward_iterations` iterations).
  The paper's IN, IB, BN, BB variants are iteration/broyden x neumann/implicit.
  """

  forward_solver: str = "iteration"
  gradient: str = "neumann"
  backward_solver: str = "fixed_point"
  backward_iterations: int = 20

  def __call__(self, slots: Array, inputs: Array,
               train: bool = False) -> tuple[Array, Array]:
    del train
    options = {"forward_solver": (self.forward_solver, ("iteration", "anderson", "broyden")),
               "gradient": (self.gradient, ("neumann", "implicit")),
               "backward_solver": (self.backward_solver, ("fixed_point", "gmres"))}
    for key, (value, valid) in options.items():
      if value not in valid:
        raise ConfigError(f"SA-ID {key} {value!r} is unknown; use one of {', '.join(valid)}.")
    keys, values = self.attention.project_inputs(self.norm_inputs(inputs))
    initial = slots
    attention = []

    def update(z: Array) -> Array:
      z, assignment = self.step(jax.lax.stop_gradient(z), keys, values)
      attention.append(assignment)
      return jax.lax.stop_gradient(z)

    num_evaluations = self.num_iterations - 1
    if num_evaluations == 0:
      fixed_point = jax.lax.stop_gradient(slots)
    elif self.forward_solver == "anderson":
      fixed_point = anderson_fixed_point(update, slots, num_evaluations)
    elif self.forward_solver == "broyden":
      fixed_point = broyden_fixed_point(update, slots, num_evaluations)
    else:
      for _ in range(num_evaluations):
        slots = update(slots)
      fixed_point = slots
    fixed_point = jax.lax.stop_gradient(fixed_point)
    slots = fixed_point + initial - jax.lax.stop_gradient(initial)
    slots, assignment = self.step(slots, keys, values)
    attention.append(assignment)
    if self.gradient == "implicit":
      module, variables = self.unbind()
      step = lambda z, variables, keys, values: module.apply(  # pylint: disable=g-long-lambda
          variables, z, keys, values, method=lambda m, *a: m.step(*a)[0])
      slots = implicit_gradient(step, self.backward_solver, self.backward_iterations,
                                slots, fixed_point, variables, keys, values)
    return slots, jax.lax.stop_gradient(jnp.stack(attention, axis=1))


class CrossAttentionLayer(nn.Module):
  """Pre-LN cross-attention layer; slots are the queries.

  `slots <- slots + Attn(LN(slots), LN(inputs))` (a GRU instead of the sum when
  `use_gru`), then `slots <- slots + MLP(LN(slots))` (skipped when `mlp_size`
  is 0).
  """

  slot_size: int
  mlp_size: int
  qkv_size: int
  num_heads: int
  inverted: bool
  use_gru: bool
  epsilon: float

  @nn.compact
  def __call__(self, slots: Array, inputs: Array) -> tuple[Array, Array]:
    attention = SlotCrossAttention(
        qkv_size=self.qkv_size, num_heads=self.num_heads,
        inverted=self.inverted, epsilon=self.epsilon, out_size=self.slot_size)
    keys, values = attention.project_inputs(nn.LayerNorm()(inputs))
    updates, assignment = attention(nn.LayerNorm()(slots), keys, values)
    if self.use_gru:
      slots, _ = nn.GRUCell(features=self.slot_size)(slots, updates)
    else:
      slots = slots + updates
    return ResidualMLP(self.mlp_size)(slots), assignment


@CORRECTORS.register("TF")
class TransformerCorrector(AttentionCorrector):
  """Stack of `num_iterations` cross-attention layers with their own weights.

  With `inverted` the softmax runs over slots and is renormalised over inputs
  (TF-Inv); with `use_gru` a per-layer GRU replaces the attention residual
  (TF-Inv+GRU).
  """

  inverted: bool = False
  use_gru: bool = False

  @nn.compact
  def __call__(self, slots: Array, inputs: Array,
               train: bool = False) -> tuple[Array, Array]:
    del train
    attention = []
    for index in range(self.num_iterations):
      slots, assignment = transformer_layer(self, name=f"layer_{index}")(slots, inputs)
      attention.append(assignment)
    return slots, jnp.stack(attention, axis=1)


def transformer_layer(corrector: TransformerCorrector, **kwargs) -> CrossAttentionLayer:
  """One layer with the options of `corrector` (`kwargs`: e.g. its `name`)."""
  return CrossAttentionLayer(
      slot_size=corrector.slot_size, mlp_size=corrector.mlp_size,
      qkv_size=corrector.qkv_size or corrector.slot_size, num_heads=corrector.num_heads,
      inverted=corrector.inverted, use_gru=corrector.use_gru, epsilon=corrector.epsilon,
      **kwargs)


@CORRECTORS.register("TF-Inv")
class InvertedTransformerCorrector(TransformerCorrector):
  """Transformer corrector with inverted attention."""

  inverted: bool = True


@CORRECTORS.register("TF-Inv+GRU")
class InvertedTransformerGRUCorrector(TransformerCorrector):
  """Inverted-attention Transformer corrector with per-layer GRUs."""

  inverted: bool = True
  use_gru: bool = True


class SlotVectorField(nn.Module):
  """The SlotODE vector field `f(S) = g(S) * u(S) + h(S)`.

  `u` is the inverted-attention readout of the inputs by the normalised slots,
  `g = sigmoid(W_g [LN(s); u])` a per-slot gate and `h = MLP([LN(s); u])`.
  Keys and values do not depend on the slots, so they are projected once
  (`project_inputs`) and the system is autonomous. With `mlp_size` 0, `h` is
  linear; a `qkv_size` other than `slot_size` projects `u` to `slot_size`.
  """

  slot_size: int
  mlp_size: int = 128
  qkv_size: int | None = None
  num_heads: int = 1
  epsilon: float = 1e-8

  def setup(self):
    self.norm_inputs = nn.LayerNorm()
    self.norm_slots = nn.LayerNorm()
    self.attention = slot_attention_readout(self.slot_size, self.qkv_size, self.num_heads,
                                            self.epsilon, project=True)
    self.gate = nn.Dense(self.slot_size)
    if self.mlp_size:
      self.hidden = nn.Dense(self.mlp_size)
    self.drift = nn.Dense(self.slot_size)

  def project_inputs(self, inputs: Array) -> tuple[Array, Array]:
    """`[batch, num_inputs, dim]` -> keys, values `[batch, num_inputs, heads, head_dim]`."""
    return self.attention.project_inputs(self.norm_inputs(inputs))

  def readout(self, slots: Array, keys: Array, values: Array) -> tuple[Array, Array]:
    """`u(S) [batch, num_slots, slot_size]` and the assignment `[batch, num_slots, num_inputs]`."""
    return self.attention(self.norm_slots(slots), keys, values)

  def __call__(self, slots: Array, keys: Array, values: Array) -> Array:
    """`dS/dt [batch, num_slots, slot_size]` at `slots [batch, num_slots, slot_size]`."""
    updates, _ = self.readout(slots, keys, values)
    features = jnp.concatenate([self.norm_slots(slots), updates], axis=-1)
    gate = nn.sigmoid(self.gate(features))
    hidden = nn.relu(self.hidden(features)) if self.mlp_size else features
    return gate * updates + self.drift(hidden)


# Vector-field evaluations of one attempted step, and once at the start (FSAL).
SOLVER_EVALUATIONS = {"euler": (1, 0), "dopri5": (6, 1), "tsit5": (6, 1)}
_DIFFRAX_SOLVERS = {"euler": diffrax.Euler, "dopri5": diffrax.Dopri5, "tsit5": diffrax.Tsit5}


def solve_ode(vector_field: Callable[[Array, Any], Array], state: Array, args: Any,
              duration: float, dt: float, solver: str, rtol: float = 1e-3,
              atol: float = 1e-4, max_steps: int = 256,
              save_times: tuple[float, ...] | None = None) -> tuple[Array, Array]:
  """Integrates the autonomous `d state / dt = vector_field(state, args)` from 0 to `duration`.

  "euler" takes `ceil(duration / dt)` steps of size `dt`; "dopri5" and "tsit5"
  adapt the step with a PID controller (`rtol`, `atol`), starting from `dt`,
  in at most `max_steps` steps (the state reached so far is returned if they
  run out).

  Returns:
    The final state (or the states at `save_times`, stacked on a new leading
    axis, interpolated without changing the steps) and the number of attempted
    steps (int32 scalar).
  """
  if solver == "euler":
    controller = diffrax.ConstantStepSize()
    max_steps = int(np.ceil(duration / dt - 1e-6))
  else:
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
  solution = diffrax.diffeqsolve(
      diffrax.ODETerm(lambda t, y, a: vector_field(y, a)), _DIFFRAX_SOLVERS[solver](),
      t0=0.0, t1=duration, dt0=dt, y0=state, args=args, stepsize_controller=controller,
      saveat=diffrax.SaveAt(t1=True) if save_times is None else diffrax.SaveAt(
          ts=jnp.asarray(save_times)), max_steps=max_steps, throw=False)
  states = solution.ys[-1] if save_times is None else solution.ys
  return states, solution.stats["num_steps"]


@CORRECTORS.register("SlotODE")
class SlotODE(nn.Module):
  """Slots as the state of an ODE integrated from time 0 to `T` (diffrax).

  Training integrates with Euler steps of size `dt` (`ceil(T / dt)` steps,
  backpropagated through). Evaluation uses `eval_solver`: "euler" (the same
  steps) or "dopri5"/"tsit5" with a PID step-size controller (`rtol`, `atol`,
  at most `max_steps` steps, initial step `dt`). Each example is integrated on
  its own, so adaptive solvers take as many steps as that scene needs; the
  steps and vector-field evaluations per example `[batch]` are sown into the
  "intermediates" collection as `solver_steps` and `solver_evals`.

  The returned attention `[batch, 1, num_slots, num_inputs]` is the
  inverted-attention assignment at the final state.
  """

  # Per-example values sown into "intermediates" (reported by eval pipelines).
  sown_statistics = ("solver_steps", "solver_evals")

  slot_size: int
  T: float = 3.0  # pylint: disable=invalid-name
  dt: float = 1.0
  # If set, training takes this many Euler steps (dt = T / num_iterations), so a
  # config written for an iterative corrector switches to SlotODE unchanged.
  num_iterations: int | None = None
  mlp_size: int = 128
  qkv_size: int | None = None
  num_heads: int = 1
  epsilon: float = 1e-8
  train_solver: str = "euler"
  eval_solver: str = "dopri5"
  rtol: float = 1e-3
  atol: float = 1e-4
  max_steps: int = 256

  def setup(self):
    for solver in (self.train_solver, self.eval_solver):
      if solver not in SOLVER_EVALUATIONS:
        raise ConfigError(f"Unknown SlotODE solver {solver!r}; use one of "
                          f"{', '.join(SOLVER_EVALUATIONS)}.")
    if not 0 < self.step_size <= self.T:
      raise ConfigError(f"SlotODE needs 0 < dt <= T, got dt={self.step_size}, T={self.T}.")
    self.field = SlotVectorField(slot_size=self.slot_size, mlp_size=self.mlp_size,
                                 qkv_size=self.qkv_size, num_heads=self.num_heads,
                                 epsilon=self.epsilon)

  @property
  def step_size(self) -> float:
    """Euler step in training (and the initial adaptive step)."""
    return self.T / self.num_iterations if self.num_iterations else self.dt

  def integrate(self, slots: Array, keys: Array, values: Array, solver: str,
                save_times: tuple[float, ...] | None = None) -> tuple[Array, Array]:
    """Integrates every example on its own from 0 to T.

    Returns:
      final slots `[batch, num_slots, slot_size]` (or `[batch, len(save_times),
      num_slots, slot_size]`, the states at `save_times`) and attempted solver
      steps `[batch]`.
    """
    if self.is_initializing():
      self.field(slots, keys, values)  # Creates the parameters.
    field, variables = self.field.unbind()

    def vector_field(state: Array, args) -> Array:
      variables, keys, values = args
      return field.apply(variables, state[None], keys[None], values[None])[0]

    def solve(state: Array, keys: Array, values: Array) -> tuple[Array, Array]:
      return solve_ode(vector_field, state, (variables, keys, values), self.T, self.step_size,
                       solver, self.rtol, self.atol, self.max_steps, save_times)

    return jax.vmap(solve)(slots, keys, values)

  def __call__(self, slots: Array, inputs: Array,
               train: bool = False) -> tuple[Array, Array]:
    keys, values = self.field.project_inputs(inputs)
    solver = self.train_solver if train else self.eval_solver
    slots, num_steps = self.integrate(slots, keys, values, solver)
    per_step, initial = SOLVER_EVALUATIONS[solver]
    self.sow("intermediates", "solver_steps", num_steps)
    self.sow("intermediates", "solver_evals", per_step * num_steps + initial)
    _, assignment = self.field.readout(slots, keys, values)
    return slots, jax.lax.stop_gradient(assignment[:, None])
