"""Tests for invariant_slots.modules.correctors and modules.attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariant_slots.modules import attention as attention_lib
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.modules.correctors import AttentionCorrector
from invariant_slots.modules.correctors import ImplicitSlotAttention
from invariant_slots.modules.correctors import SlotAttention
from invariant_slots.modules.correctors import TransformerCorrector
from invariant_slots.registry import ConfigError

BATCH, NUM_SLOTS, SLOT_SIZE, NUM_INPUTS, INPUT_SIZE = 2, 3, 8, 12, 10
MLP_SIZE = 16
# Every registered corrector of the attention families (SlotODE has no
# iterations; tests/test_slot_ode.py covers it).
ALL_NAMES = [n for n in CORRECTORS.names if issubclass(CORRECTORS.get(n), AttentionCorrector)]
SHARED_NAMES = [n for n in ALL_NAMES if issubclass(CORRECTORS.get(n), SlotAttention)]
PER_LAYER_NAMES = [n for n in ALL_NAMES if issubclass(CORRECTORS.get(n), TransformerCorrector)]
# Softmax over slots: every SA variant and the inverted Transformers.
INVERTED_NAMES = [n for n in ALL_NAMES
                  if n in SHARED_NAMES or getattr(CORRECTORS.get(n), "inverted", False)]


def _build(name, num_iterations=3, **options):
  config = dict(name=name, num_iterations=num_iterations, mlp_size=MLP_SIZE, **options)
  return CORRECTORS.build(config, slot_size=SLOT_SIZE)


def _key(seed):
  """A cheap-to-compile PRNG key (threefry initialisers compile slowly on CPU)."""
  return jax.random.key(seed, impl="rbg")


def _normal(seed, shape, scale=1.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _data(seed=0, num_slots=NUM_SLOTS, num_inputs=NUM_INPUTS):
  slots = _normal(seed, (BATCH, num_slots, SLOT_SIZE))
  inputs = _normal(seed + 1000, (BATCH, num_inputs, INPUT_SIZE))
  return slots, inputs


def _init(module, slots, inputs, seed=1):
  return module.init(_key(seed), slots, inputs)


def _count(params):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))


# ----------------------------------------------------------------- registry


def test_registry_has_exactly_the_seven_correctors():
  # SlotODE (no num_iterations) is tested in test_slot_ode.py.
  assert sorted(CORRECTORS.names) == sorted(
      ["SA", "SA-noGRU", "SA-ID", "TF", "TF-Inv", "TF-Inv+GRU", "SlotODE"])
  assert sorted(ALL_NAMES) == sorted(SHARED_NAMES + PER_LAYER_NAMES)
  assert sorted(INVERTED_NAMES) == ["SA", "SA-ID", "SA-noGRU", "TF-Inv", "TF-Inv+GRU"]


def test_unknown_corrector_raises_config_error_listing_names():
  with pytest.raises(ConfigError) as info:
    CORRECTORS.get("SlotAttentionXL")
  message = str(info.value)
  assert "SlotAttentionXL" in message
  for name in ALL_NAMES:
    assert name in message
  with pytest.raises(ConfigError):
    _build("not-a-corrector")


def test_bad_corrector_option_raises_config_error():
  with pytest.raises(ConfigError, match="SA"):
    _build("SA", not_an_option=3)


# --------------------------------------------------- symmetries and shapes


@pytest.fixture(scope="module")
def corrector_runs():
  """For each corrector: (module, params, slots, inputs, out_slots, attention)."""
  slots, inputs = _data()
  runs = {}
  for name in ALL_NAMES:
    module = _build(name, num_iterations=2)
    params = _init(module, slots, inputs)
    apply = module.apply
    out, attn = apply(params, slots, inputs)
    runs[name] = (apply, params, slots, inputs, out, attn)
  return runs


@pytest.mark.parametrize("name", ALL_NAMES)
def test_output_shapes(name, corrector_runs):
  _, _, _, _, out, attn = corrector_runs[name]
  assert out.shape == (BATCH, NUM_SLOTS, SLOT_SIZE)
  assert attn.shape == (BATCH, 2, NUM_SLOTS, NUM_INPUTS)
  assert np.all(np.isfinite(out)) and np.all(np.isfinite(attn))
  assert np.all(np.asarray(attn) >= 0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_slot_permutation_equivariance(name, corrector_runs):
  apply, params, slots, inputs, out, attn = corrector_runs[name]
  # Non-trivial: the slots stay distinct, so a permutation is observable.
  assert np.max(np.abs(out[:, 0] - out[:, 1])) > 1e-3
  perm = np.array([2, 0, 1])
  out_p, attn_p = apply(params, slots[:, perm], inputs)
  np.testing.assert_allclose(out_p, out[:, perm], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(attn_p, attn[:, :, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_input_order_invariance(name, corrector_runs):
  apply, params, slots, inputs, out, attn = corrector_runs[name]
  perm = np.random.default_rng(0).permutation(NUM_INPUTS)
  assert not np.array_equal(perm, np.arange(NUM_INPUTS))
  out_p, attn_p = apply(params, slots, inputs[:, perm])
  np.testing.assert_allclose(out_p, out, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(attn_p, attn[..., perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_outputs_depend_on_inputs_and_slots(name, corrector_runs):
  apply, params, slots, inputs, out, _ = corrector_runs[name]
  out_other_inputs, _ = apply(params, slots, inputs[::-1])  # Swap examples.
  assert np.max(np.abs(out_other_inputs - out)) > 1e-3
  out_other_slots, _ = apply(params, slots + 1.0, inputs)
  assert np.max(np.abs(out_other_slots - out)) > 1e-3


@pytest.mark.parametrize("name", INVERTED_NAMES)
def test_inverted_attention_sums_to_one_over_slots(name, corrector_runs):
  _, _, _, _, _, attn = corrector_runs[name]
  np.testing.assert_allclose(np.sum(attn, axis=2), 1.0, atol=1e-5)


def test_standard_transformer_attention_sums_to_one_over_inputs(corrector_runs):
  _, _, _, _, _, attn = corrector_runs["TF"]
  np.testing.assert_allclose(np.sum(attn, axis=3), 1.0, atol=1e-5)
  # And not over slots (that would mean the softmax axis was the inverted one).
  assert np.max(np.abs(np.sum(attn, axis=2) - 1.0)) > 1e-3


@pytest.mark.parametrize("name", ["SA", "TF-Inv"])
def test_multi_head_attention_still_normalised(name):
  slots, inputs = _data(seed=3)
  module = _build(name, num_iterations=1, num_heads=2)
  params = _init(module, slots, inputs)
  out, attn = module.apply(params, slots, inputs)
  assert out.shape == (BATCH, NUM_SLOTS, SLOT_SIZE)
  assert attn.shape == (BATCH, 1, NUM_SLOTS, NUM_INPUTS)
  np.testing.assert_allclose(np.sum(attn, axis=2), 1.0, atol=1e-5)


def test_indivisible_heads_raise():
  slots, inputs = _data()
  module = _build("SA", num_iterations=1, num_heads=3)  # 8 % 3 != 0.
  with pytest.raises(ValueError, match="divisible"):
    _init(module, slots, inputs)


# --------------------------------------------------------- attention_weights


def _numpy_inverted(logits, epsilon):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=-2, keepdims=True)
  assignment = np.exp(shifted) / np.exp(shifted).sum(axis=-2, keepdims=True)
  weights = assignment + epsilon
  return weights / weights.sum(axis=-1, keepdims=True), assignment


@pytest.mark.parametrize("epsilon", [1e-8, 1e-2])
def test_inverted_attention_weights_match_numpy(epsilon):
  logits = _normal(0, (2, 2, 4, 7), 3.0)
  weights, assignment = attention_lib.attention_weights(logits, True, epsilon)
  ref_weights, ref_assignment = _numpy_inverted(logits, epsilon)
  assert weights.shape == assignment.shape == logits.shape
  np.testing.assert_allclose(assignment, ref_assignment, atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose(weights, ref_weights, atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose(np.sum(assignment, axis=-2), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, atol=1e-6)
  # The two normalisations are genuinely different.
  assert np.max(np.abs(np.sum(weights, axis=-2) - 1.0)) > 1e-2


def test_inverted_attention_epsilon_makes_losing_slot_uniform():
  # Query 0 wins every key by a huge margin: query 1's assignment is ~0, so its
  # weights come from epsilon alone and are uniform over keys (not NaN).
  logits = jnp.array([[100.0, 100.0, 100.0, 100.0], [0.0, -5.0, 3.0, -1.0]])
  weights, assignment = attention_lib.attention_weights(logits, True, 1e-8)
  assert np.all(np.isfinite(weights))
  np.testing.assert_allclose(assignment[0], 1.0, atol=1e-6)
  np.testing.assert_allclose(weights[1], 0.25, atol=1e-3)


def test_standard_attention_weights_softmax_over_keys():
  logits = _normal(1, (3, 5, 6), 2.0)
  weights, assignment = attention_lib.attention_weights(logits, False)
  np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(weights, assignment)
  ref = np.exp(np.asarray(logits, np.float64))
  ref /= ref.sum(axis=-1, keepdims=True)
  np.testing.assert_allclose(weights, ref, atol=1e-6, rtol=1e-5)
  assert np.max(np.abs(np.sum(weights, axis=-2) - 1.0)) > 1e-2


# -------------------------------------------------- parameter sharing/structure


def _param_count(name, num_iterations):
  slots, inputs = _data()
  module = _build(name, num_iterations=num_iterations)
  shapes = jax.eval_shape(module.init, _key(0), slots, inputs)
  return _count(shapes)


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_slot_attention_shares_weights_across_iterations(name):
  counts = [_param_count(name, n) for n in (1, 2, 3)]
  assert counts[0] > 0
  assert counts == [counts[0]] * 3


@pytest.mark.parametrize("name", PER_LAYER_NAMES)
def test_transformer_has_weights_per_layer(name):
  counts = [_param_count(name, n) for n in (1, 2, 3)]
  assert counts[0] > 0
  assert counts == [counts[0], 2 * counts[0], 3 * counts[0]]


def _structure(name):
  slots, inputs = _data()
  shapes = jax.eval_shape(_build(name).init, _key(0), slots, inputs)
  return jax.tree_util.tree_map(lambda x: x.shape, shapes)


def _has_gru(tree):
  paths = jax.tree_util.tree_flatten_with_path(tree)[0]
  return any("gru" in jax.tree_util.keystr(path).lower() for path, _ in paths)


def test_param_structures():
  sa, sa_id, no_gru = _structure("SA"), _structure("SA-ID"), _structure("SA-noGRU")
  assert sa == sa_id
  assert _has_gru(sa)
  assert not _has_gru(no_gru)
  assert _has_gru(_structure("TF-Inv+GRU"))
  assert not _has_gru(_structure("TF"))
  assert not _has_gru(_structure("TF-Inv"))
  assert _structure("TF") == _structure("TF-Inv")


# -------------------------------------------------------------- SA-ID gradient


def _run_steps(module, slots, inputs, num_steps):
  keys, values = module.attention.project_inputs(module.norm_inputs(inputs))
  for _ in range(num_steps):
    slots, _ = module.step(slots, keys, values)
  return slots


def test_implicit_slot_attention_gradient():
  num_iterations = 4
  slots, inputs = _data(seed=5)
  sa_id = ImplicitSlotAttention(slot_size=SLOT_SIZE, num_iterations=num_iterations,
                                mlp_size=MLP_SIZE)
  sa = SlotAttention(slot_size=SLOT_SIZE, num_iterations=num_iterations,
                     mlp_size=MLP_SIZE)
  params = _init(sa_id, slots, inputs)
  target = _normal(9, (BATCH, NUM_SLOTS, SLOT_SIZE))

  def loss(out):
    return jnp.sum(out * target) + 0.5 * jnp.sum(out**2)

  # Same computation forward.
  out_id, attn_id = sa_id.apply(params, slots, inputs)
  out_sa, attn_sa = sa.apply(params, slots, inputs)
  np.testing.assert_allclose(out_id, out_sa, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(attn_id, attn_sa, atol=1e-5, rtol=1e-5)

  grad_id = jax.grad(
      lambda p, s: loss(sa_id.apply(p, s, inputs)[0]), argnums=(0, 1))(params, slots)
  grad_sa = jax.grad(
      lambda p, s: loss(sa.apply(p, s, inputs)[0]), argnums=(0, 1))(params, slots)

  # Reference: one differentiable step from the stopped fixed point.
  fixed_point = sa_id.apply(params, slots, inputs, num_iterations - 1,
                            method=_run_steps)
  fixed_point = jax.lax.stop_gradient(fixed_point)
  grad_ref = jax.grad(
      lambda p, z: loss(sa_id.apply(p, z, inputs, 1, method=_run_steps)),
      argnums=(0, 1))(params, fixed_point)

  ref_leaves = jax.tree_util.tree_leaves(grad_ref[0])
  id_leaves = jax.tree_util.tree_leaves(grad_id[0])
  sa_leaves = jax.tree_util.tree_leaves(grad_sa[0])
  assert jax.tree_util.tree_structure(grad_id[0]) == jax.tree_util.tree_structure(
      grad_ref[0])
  for got, want in zip(id_leaves, ref_leaves):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
  # Straight-through: initial slots get the gradient w.r.t. the final step's input.
  np.testing.assert_allclose(grad_id[1], grad_ref[1], atol=1e-5, rtol=1e-4)
  assert np.max(np.abs(grad_id[1])) > 1e-4

  # The unrolled gradient is different (it backpropagates through all steps).
  param_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(id_leaves, sa_leaves))
  param_scale = max(float(np.max(np.abs(b))) for b in sa_leaves)
  assert param_diff > 1e-3 * param_scale
  assert np.max(np.abs(grad_id[1] - grad_sa[1])) > 1e-3 * np.max(np.abs(grad_sa[1]))


def test_implicit_slot_attention_attention_has_no_gradient():
  slots, inputs = _data(seed=6)
  sa_id = _build("SA-ID", num_iterations=2)
  params = _init(sa_id, slots, inputs)
  grads = jax.grad(lambda p: jnp.sum(sa_id.apply(p, slots, inputs)[1] ** 2))(params)
  for leaf in jax.tree_util.tree_leaves(grads):
    np.testing.assert_array_equal(leaf, 0.0)
