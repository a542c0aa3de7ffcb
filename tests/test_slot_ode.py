"""Tests for the SlotODE corrector, the ODE solver wrapper and SA-ID's solver variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from invariant_slots.modules import correctors
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.registry import ConfigError

BATCH, NUM_SLOTS, SLOT_SIZE, NUM_INPUTS, INPUT_SIZE = 2, 3, 8, 12, 10


def _normal(seed, shape, scale=1.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _data(seed=0):
  return (_normal(seed, (BATCH, NUM_SLOTS, SLOT_SIZE)),
          _normal(seed + 1000, (BATCH, NUM_INPUTS, INPUT_SIZE)))


def _slot_ode(**options):
  config = dict(name="SlotODE", mlp_size=16, **options)
  return CORRECTORS.build(config, slot_size=SLOT_SIZE)


def _key(seed):
  return jax.random.key(seed, impl="rbg")


def _field(module, slots, inputs):
  """The vector field at `slots` (a method for `module.apply`)."""
  keys, values = module.field.project_inputs(inputs)
  return module.field(slots, keys, values)


# ------------------------------------------------------------------ solve_ode


def test_dopri5_on_a_linear_field_matches_the_matrix_exponential():
  rng = np.random.default_rng(0)
  # A stable rotation-plus-decay system: complex eigenvalues with negative real part.
  matrix = rng.normal(size=(4, 4)) - 1.5 * np.eye(4)
  state = rng.normal(size=(4,))
  duration = 2.0
  solve = jax.jit(lambda a, y: correctors.solve_ode(
      lambda s, a: a @ s, y, a, duration, 0.1, "dopri5", rtol=1e-6, atol=1e-8,
      max_steps=1000))
  final, num_steps = solve(jnp.asarray(matrix, jnp.float32), jnp.asarray(state, jnp.float32))
  expected = scipy.linalg.expm(duration * matrix) @ state
  np.testing.assert_allclose(final, expected, atol=2e-5, rtol=1e-4)
  assert int(num_steps) > 1
  # A loose tolerance takes fewer adaptive steps and is less accurate.
  loose, loose_steps = jax.jit(lambda a, y: correctors.solve_ode(
      lambda s, a: a @ s, y, a, duration, 0.1, "dopri5", rtol=1e-2, atol=1e-2))(
          jnp.asarray(matrix, jnp.float32), jnp.asarray(state, jnp.float32))
  assert int(loose_steps) < int(num_steps)
  assert np.max(np.abs(loose - expected)) > np.max(np.abs(final - expected))


def test_euler_takes_duration_over_dt_steps():
  final, num_steps = correctors.solve_ode(lambda s, a: a * s, jnp.ones(()), -1.0, 1.0, 0.25,
                                          "euler")
  assert int(num_steps) == 4
  np.testing.assert_allclose(final, 0.75**4, rtol=1e-6)


# -------------------------------------------------------------------- SlotODE


@pytest.fixture(scope="module")
def slot_ode_run():
  """A SlotODE with T = dt = 0.7 (one Euler step): module, params, data, outputs."""
  slots, inputs = _data()
  module = _slot_ode(T=0.7, dt=0.7, eval_solver="euler")
  params = jax.jit(module.init)(_key(1), slots, inputs)["params"]
  apply = jax.jit(lambda p, s, x: module.apply({"params": p}, s, x, train=True))
  return module, params, slots, inputs, apply


def test_euler_with_dt_equal_to_T_is_one_explicit_update(slot_ode_run):
  module, params, slots, inputs, apply = slot_ode_run
  out, attention = apply(params, slots, inputs)
  field = module.apply({"params": params}, slots, inputs, method=_field)
  np.testing.assert_allclose(out, slots + 0.7 * field, atol=1e-5, rtol=1e-5)
  assert np.max(np.abs(field)) > 1e-2  # The update is not trivially zero.
  assert attention.shape == (BATCH, 1, NUM_SLOTS, NUM_INPUTS)
  np.testing.assert_allclose(np.sum(attention, axis=2), 1.0, atol=1e-5)


def test_vector_field_and_slot_ode_are_permutation_equivariant(slot_ode_run):
  module, params, slots, inputs, apply = slot_ode_run
  perm = np.array([2, 0, 1])
  field = module.apply({"params": params}, slots, inputs, method=_field)
  field_p = module.apply({"params": params}, slots[:, perm], inputs, method=_field)
  assert np.max(np.abs(field[:, 0] - field[:, 1])) > 1e-3
  np.testing.assert_allclose(field_p, field[:, perm], atol=1e-5, rtol=1e-5)
  out, attention = apply(params, slots, inputs)
  out_p, attention_p = apply(params, slots[:, perm], inputs)
  np.testing.assert_allclose(out_p, out[:, perm], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(attention_p, attention[:, :, perm], atol=1e-5, rtol=1e-5)


def test_dopri5_eval_reports_steps_per_example(slot_ode_run):
  _, params, slots, inputs, _ = slot_ode_run
  module = _slot_ode(T=3.0, dt=1.0, rtol=1e-5, atol=1e-6)
  # Example 1 has 10x larger inputs, so its dynamics differ from example 0's.
  inputs = inputs * np.array([1.0, 10.0], np.float32)[:, None, None]
  (out, attention), state = jax.jit(lambda p: module.apply(
      {"params": p}, slots, inputs, mutable=["intermediates"]))(params)
  steps = state["intermediates"]["solver_steps"][0]
  evals = state["intermediates"]["solver_evals"][0]
  assert steps.shape == (BATCH,) and np.all(steps > 3)
  np.testing.assert_array_equal(evals, 6 * steps + 1)
  assert out.shape == slots.shape and attention.shape == (BATCH, 1, NUM_SLOTS, NUM_INPUTS)
  # The same ODE with many small Euler steps lands close to the adaptive solution.
  fine = _slot_ode(T=3.0, dt=0.01, eval_solver="euler")
  out_fine, _ = jax.jit(lambda p: fine.apply({"params": p}, slots, inputs))(params)
  np.testing.assert_allclose(out, out_fine, atol=0.05 * np.max(np.abs(out_fine)))


@pytest.mark.parametrize("options, message", [
    (dict(eval_solver="rk4"), "solver"), (dict(T=1.0, dt=2.0), "dt <= T")])
def test_bad_slot_ode_options_raise_config_error(options, message):
  slots, inputs = _data()
  with pytest.raises(ConfigError, match=message):
    jax.eval_shape(_slot_ode(**options).init, _key(0), slots, inputs)


# ------------------------------------------------- fixed points and gradients


def _contractive_problem(seed=0, size=4, norm=0.6):
  """`f(z) = tanh(W z + U x + b)` with spectral norm of W below 1 (a contraction)."""
  rng = np.random.default_rng(seed)
  weight = rng.normal(size=(size, size))
  weight *= norm / np.linalg.norm(weight, 2)
  params = {"w": weight, "u": rng.normal(size=(size, size)), "b": rng.normal(size=(size,))}
  inputs = rng.normal(size=(2, size))
  return params, inputs


def _update(z, params, inputs):
  return jnp.tanh(z @ params["w"].T + inputs @ params["u"].T + params["b"])


def _fixed_point(params, inputs, num_iterations=200):
  return jax.lax.fori_loop(0, num_iterations, lambda _, z: _update(z, params, inputs),
                           jnp.zeros_like(inputs))


@pytest.mark.parametrize("solver", ["fixed_point", "gmres"])
def test_implicit_gradient_matches_finite_differences(solver):
  with jax.enable_x64(True):
    params, inputs = _contractive_problem()
    params = jax.tree.map(jnp.asarray, params)
    target = jnp.asarray(np.random.default_rng(1).normal(size=inputs.shape))

    def loss_implicit(params):
      fixed_point = jax.lax.stop_gradient(_fixed_point(params, inputs, 100))
      output = _update(fixed_point, params, inputs)
      output = correctors.implicit_gradient(_update, solver, 100, output, fixed_point,
                                            params, inputs)
      return jnp.sum(output * target)

    def loss_neumann(params):
      fixed_point = jax.lax.stop_gradient(_fixed_point(params, inputs, 100))
      return jnp.sum(_update(fixed_point, params, inputs) * target)

    loss_exact = jax.jit(lambda p: jnp.sum(_fixed_point(p, inputs) * target))
    grads = jax.jit(jax.grad(loss_implicit))(params)
    grads_neumann = jax.jit(jax.grad(loss_neumann))(params)
    step = 1e-6
    for name in ("w", "u", "b"):
      flat = np.asarray(params[name]).ravel()
      numeric = np.zeros_like(flat)
      for i in range(flat.size):
        offset = np.zeros_like(flat)
        offset[i] = step
        plus = {**params, name: jnp.asarray((flat + offset).reshape(params[name].shape))}
        minus = {**params, name: jnp.asarray((flat - offset).reshape(params[name].shape))}
        numeric[i] = (loss_exact(plus) - loss_exact(minus)) / (2 * step)
      np.testing.assert_allclose(np.asarray(grads[name]).ravel(), numeric, atol=1e-6,
                                 rtol=1e-5)
      # The first-order (Neumann) gradient is measurably different.
      assert np.max(np.abs(np.asarray(grads_neumann[name]).ravel() - numeric)) > 1e-3


@pytest.mark.parametrize("solve", [correctors.anderson_fixed_point,
                                   correctors.broyden_fixed_point])
def test_accelerated_solvers_beat_plain_iteration(solve):
  # A slow contraction, where plain iteration converges slowly.
  params, inputs = _contractive_problem(seed=2, size=6, norm=0.98)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  inputs = 0.1 * jnp.asarray(inputs, jnp.float32)
  fn = lambda z: _update(z, params, inputs)
  exact = _fixed_point(params, inputs, 2000)
  start = jnp.zeros_like(inputs)
  accelerated = jax.jit(lambda z: solve(fn, z, 6))(start)
  plain = _fixed_point(params, inputs, 6)
  error = float(jnp.max(jnp.abs(accelerated - exact)))
  assert error < 0.3 * float(jnp.max(jnp.abs(plain - exact)))
  # One evaluation is one plain iteration.
  np.testing.assert_allclose(solve(fn, start, 1), fn(start), atol=1e-6)


def test_sa_id_variants_share_the_forward_and_differ_in_gradient():
  slots, inputs = _data(seed=3)
  build = lambda **o: CORRECTORS.build(  # pylint: disable=g-long-lambda
      dict(name="SA-ID", num_iterations=3, mlp_size=16, **o), slot_size=SLOT_SIZE)
  base = build()
  params = jax.jit(base.init)(_key(2), slots, inputs)
  loss = lambda module: jax.jit(jax.value_and_grad(  # pylint: disable=g-long-lambda
      lambda p: jnp.sum(module.apply(p, slots, inputs)[0] ** 2)))(params)
  value, grads = loss(base)
  value_implicit, grads_implicit = loss(build(gradient="implicit", backward_iterations=5))
  np.testing.assert_allclose(value_implicit, value, rtol=1e-5)
  leaves = jax.tree_util.tree_leaves(grads)
  implicit_leaves = jax.tree_util.tree_leaves(grads_implicit)
  assert all(np.all(np.isfinite(g)) for g in implicit_leaves)
  assert max(float(np.max(np.abs(a - b))) for a, b in zip(leaves, implicit_leaves)) > 1e-4
  for forward in ("anderson", "broyden"):  # The solvers themselves are tested above.
    out, attention = jax.eval_shape(build(forward_solver=forward).apply, params, slots, inputs)
    assert out.shape == slots.shape and attention.shape == (BATCH, 3, NUM_SLOTS, NUM_INPUTS)
  with pytest.raises(ConfigError, match="forward_solver"):
    build(forward_solver="newton").apply(params, slots, inputs)
