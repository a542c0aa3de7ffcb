"""Tests for the model parts in invariant_slots.modules and build_model."""

import functools
import importlib.util
import pathlib

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariant_slots.modules import convolution
from invariant_slots.modules import onednn
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.modules.decoders import SpatialBroadcastDecoder
from invariant_slots.modules.encoders import ENCODERS
from invariant_slots.modules.encoders import position_grid
from invariant_slots.modules.initializers import INITIALIZERS
from invariant_slots.modules.models import build_model
from invariant_slots.registry import ConfigError

_CONFIG_PATH = pathlib.Path(__file__).resolve().parents[1] / "configs" / "shapes.py"


def _shapes_config():
  spec = importlib.util.spec_from_file_location("shapes_config", _CONFIG_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _key(seed):
  """A cheap-to-compile PRNG key (threefry makes jitted inits slow on CPU)."""
  return jax.random.key(seed, impl="rbg")


def _image(batch=2, size=16):
  return np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype(np.float32)


def _small_config(**corrector):
  """The shapes config shrunk to 16x16 images, 3 slots of size 16."""
  config = _shapes_config()
  config.data.resolution = (16, 16)
  config.model.num_slots = 3
  config.model.slot_size = 16
  config.model.encoder = dict(name="CNN", features=[8, 8], strides=[2, 1],
                              kernel_size=3, mlp_size=16)
  config.model.corrector = dict(name="SA", num_iterations=2, mlp_size=16, **corrector)
  config.model.decoder = dict(name="SpatialBroadcast", broadcast_size=(4, 4),
                              features=[8, 8], strides=[2, 2], kernel_size=3)
  return config


# ------------------------------------------------------------ ConvTranspose

# (input height, input width), kernel, strides, padding.
_CONV_CASES = [
    ((5, 7), (3, 3), (2, 2), "SAME"),
    ((4, 4), (1, 1), (2, 2), "SAME"),  # kernel < stride
    ((3, 5), (2, 2), (3, 3), "SAME"),  # kernel < stride
    ((5, 6), (5, 5), (2, 2), "SAME"),
    ((6, 6), (4, 4), (2, 2), "SAME"),
    ((5, 4), (5, 5), (2, 2), "VALID"),
    ((3, 3), (3, 3), (3, 3), "VALID"),
    ((4, 5), (2, 2), (3, 3), "VALID"),  # kernel < stride
    ((5, 6), (3, 5), (2, 3), "SAME"),  # anisotropic
    ((4, 3), (4, 3), (3, 2), "VALID"),  # anisotropic
]


def _outputs_and_grads(modules, params, x, cotangent):
  """Each module's output and the gradients of `sum(output * cotangent)` with
  respect to the parameters and the input."""
  results = []
  for module in modules:
    loss = lambda p, i, m=module: jnp.sum(m.apply(p, i) * cotangent)
    grads = jax.grad(loss, argnums=(0, 1))(params, x)
    results.append((module.apply(params, x), grads[0]["params"], grads[1]))
  return results


@pytest.mark.parametrize("size,kernel,strides,padding", _CONV_CASES)
def test_polyphase_conv_transpose_matches_flax(size, kernel, strides, padding):
  rng = np.random.default_rng(sum(size) * 10 + kernel[0])
  x = rng.normal(size=(2, *size, 3)).astype(np.float32)
  reference = nn.ConvTranspose(4, kernel, strides, padding=padding)
  ours = convolution.ConvTranspose(4, kernel, strides, padding=padding,
                                   implementation="polyphase")
  shapes = jax.eval_shape(reference.init, _key(0), x)
  assert jax.tree_util.tree_map(jnp.shape, shapes) == jax.tree_util.tree_map(
      jnp.shape, jax.eval_shape(ours.init, _key(0), x))
  params = jax.tree_util.tree_map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  out_shape = jax.eval_shape(reference.apply, params, x).shape
  cotangent = rng.normal(size=out_shape).astype(np.float32)

  (want, want_dp, want_dx), (got, got_dp, got_dx) = jax.jit(
      functools.partial(_outputs_and_grads, (reference, ours), cotangent=cotangent))(params, x)
  want_dk, got_dk = want_dp["kernel"], got_dp["kernel"]
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(got_dk, want_dk, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(got_dx, want_dx, atol=1e-4, rtol=1e-4)


def test_conv_transpose_lax_and_stride_one_match_flax():
  x = np.random.default_rng(0).normal(size=(1, 4, 5, 2)).astype(np.float32)
  for strides, impl in [((2, 2), "lax"), ((1, 1), "polyphase"), ((2, 2), "auto")]:
    reference = nn.ConvTranspose(3, (3, 3), strides)
    params = reference.init(_key(1), x)
    got = convolution.ConvTranspose(3, (3, 3), strides, implementation=impl).apply(params, x)
    np.testing.assert_allclose(got, reference.apply(params, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size,kernel,strides,padding", _CONV_CASES[::3])
def test_polyphase_form_with_tap_gradients_matches_xla(size, kernel, strides, padding):
  rng = np.random.default_rng(sum(size))
  x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*kernel, 3, 5)), jnp.float32)
  want = jax.lax.conv_transpose(x, w, strides, padding, dimension_numbers=convolution.DIMENSIONS)
  cotangent = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
  loss = lambda conv: lambda x, w: jnp.sum(  # pylint: disable=g-long-lambda
      convolution.polyphase_conv_transpose(x, w, strides, padding, conv=conv) * cotangent)
  want_grads = jax.grad(lambda x, w: jnp.sum(jax.lax.conv_transpose(
      x, w, strides, padding, dimension_numbers=convolution.DIMENSIONS) * cotangent),
                        argnums=(0, 1))(x, w)
  got_grads = jax.grad(loss(convolution.tap_conv), argnums=(0, 1))(x, w)
  for got, expected in zip(got_grads, want_grads):
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


_TAP_CONV_CASES = [  # size, kernel, strides, padding, in -> out features
    ((7, 9), (1, 1), (1, 1), "SAME", (3, 5)),
    ((9, 7), (5, 5), (1, 1), "SAME", (3, 2)),
    ((7, 7), (3, 3), (2, 2), "SAME", (4, 6)),
    ((8, 9), (1, 1), (2, 2), "SAME", (6, 3)),
    ((7, 7), (3, 3), (1, 1), "VALID", (5, 3)),
    ((9, 8), (5, 5), (2, 2), "VALID", (3, 7)),
    ((9, 9), (3, 5), (2, 1), "SAME", (3, 4)),  # anisotropic
]


_ONEDNN = pytest.mark.skipif(not onednn.available(), reason=str(onednn.unavailable_reason()))


@pytest.mark.parametrize("implementation", ["taps", pytest.param("onednn", marks=_ONEDNN)])
@pytest.mark.parametrize("size,kernel,strides,padding,channels", _TAP_CONV_CASES + [
    ((6, 5), (3, 3), (1, 1), ((2, -1), (0, 1)), (4, 3)),  # uneven, with a crop
    ((10, 11), (4, 4), (2, 2), "SAME", (5, 9)),  # even kernel, odd map
])
def test_fast_conv_matches_flax_conv_and_both_gradients(size, kernel, strides, padding, channels,
                                                        implementation):
  rng = np.random.default_rng(sum(size) + 10 * kernel[0] + strides[0])
  x = rng.normal(size=(2, *size, channels[0])).astype(np.float32)
  reference = nn.Conv(channels[1], kernel, strides, padding=padding)
  ours = convolution.Conv(channels[1], kernel, strides, padding=padding,
                          implementation=implementation)
  params = reference.init(_key(0), x)
  # The same parameters as nn.Conv: names, shapes and initialisation.
  assert jax.tree.map(jnp.shape, ours.init(_key(0), x)) == jax.tree.map(jnp.shape, params)
  np.testing.assert_array_equal(ours.init(_key(0), x)["params"]["kernel"],
                                params["params"]["kernel"])
  cotangent = rng.normal(size=jax.eval_shape(reference.apply, params, x).shape)

  (want, want_dp, want_dx), (got, got_dp, got_dx) = jax.jit(
      functools.partial(_outputs_and_grads, (reference, ours), cotangent=cotangent))(params, x)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(got_dp["kernel"], want_dp["kernel"], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(got_dp["bias"], want_dp["bias"], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(got_dx, want_dx, atol=1e-4, rtol=1e-4)


_BLOCKED_CASES = [  # size, kernel, padding, in -> out features
    ((9, 7), (5, 5), "SAME", (3, 2)),
    ((8, 8), (5, 5), "VALID", (2, 5)),
    ((7, 10), (4, 3), "SAME", (3, 4)),
    ((6, 5), (3, 3), ((2, -1), (0, 1)), (4, 3)),  # uneven, with a crop
    ((5, 7), (1, 1), "SAME", (3, 5)),
    ((11, 9), (6, 6), "SAME", (2, 3)),
]


@pytest.mark.parametrize("block", [1, 2, 3, (1, 4), (2, 3)])
@pytest.mark.parametrize("size,kernel,padding,channels", _BLOCKED_CASES)
def test_blocked_weight_gradient_matches_xla(size, kernel, padding, channels, block):
  rng = np.random.default_rng(sum(size) + 10 * kernel[0] + int(np.sum(block)))
  x = jnp.asarray(rng.normal(size=(2, *size, channels[0])), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*kernel, *channels)), jnp.float32)
  pads = convolution.conv_padding(x.shape, w.shape, (1, 1), padding)
  cotangent = jnp.asarray(rng.normal(size=convolution.lax_conv(x, w, (1, 1), pads).shape),
                          jnp.float32)
  want = jax.grad(lambda w: jnp.sum(convolution.lax_conv(x, w, (1, 1), pads) * cotangent))(w)
  got = convolution.blocked_weight_gradient(x, cotangent, kernel, pads, block)
  assert got.shape == w.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_weight_block_groups_pixels_along_the_width():
  assert [convolution.weight_block(k) for k in ((1, 1), (3, 3), (5, 3), (3, 5), (5, 5))] == [
      (1, 1), (1, 2), (1, 2), (1, 4), (1, 4)]


def test_conv_switches_by_backend_and_rejects_bad_options(monkeypatch):
  x = np.random.default_rng(0).normal(size=(1, 5, 5, 2)).astype(np.float32)
  params = nn.Conv(3, (3, 3)).init(_key(1), x)
  for impl in ("lax", "auto"):
    got = convolution.Conv(3, (3, 3), implementation=impl).apply(params, x)
    np.testing.assert_allclose(got, nn.Conv(3, (3, 3)).apply(params, x), atol=1e-5)
  def uses_taps(in_features, out_features, size=64):
    wide = convolution.Conv(out_features, (3, 3))
    inputs = jnp.zeros((8, size, size, in_features))  # 8 * 64 * 64 = 32768 positions
    return "custom_vjp" in str(jax.make_jaxpr(
        lambda x: wide.init_with_output(_key(0), x))(inputs))

  if jax.default_backend() == "cpu":
    # "auto" on CPU takes oneDNN's convolution for every float32 kernel where installed ...
    assert uses_taps(16, 4, size=8) == onednn.available()
    # ... and without it, taps for wide kernels on large maps.
    monkeypatch.setenv(convolution.AUTO_VARIABLE, "taps,polyphase")
    assert uses_taps(32, 32) and not uses_taps(16, 4) and not uses_taps(32, 32, size=32)
  monkeypatch.setenv(convolution.AUTO_VARIABLE, "polyphase")
  assert not uses_taps(32, 32)
  # Mixed dtypes are promoted as nn.Conv does.
  mixed = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  np.testing.assert_allclose(convolution.Conv(3, (3, 3)).apply(mixed, x),
                             nn.Conv(3, (3, 3)).apply(mixed, x), atol=1e-2)
  with pytest.raises(ValueError, match="implementation"):
    convolution.Conv(3, (3, 3), implementation="fft").init(_key(0), x)
  with pytest.raises(ValueError, match="padding"):
    convolution.Conv(3, (3, 3), padding="CIRCULAR").init(_key(0), x)


def test_conv_transpose_rejects_bad_options():
  x = jnp.zeros((1, 3, 3, 2))
  with pytest.raises(ValueError, match="implementation"):
    convolution.ConvTranspose(3, (3, 3), (2, 2), implementation="fft").init(
        _key(0), x)
  with pytest.raises(ValueError, match="padding"):
    convolution.transpose_padding(3, 2, "CIRCULAR")


# ------------------------------------------------------------- initializers


def test_gaussian_initializer_samples():
  module = INITIALIZERS.build({"name": "gaussian"}, num_slots=4, slot_size=8)
  params = module.init({"params": _key(0), "slots": _key(1)}, 2)
  a = module.apply(params, 2, rngs={"slots": _key(2)})
  b = module.apply(params, 2, rngs={"slots": _key(3)})
  a_again = module.apply(params, 2, rngs={"slots": _key(2)})
  assert a.shape == (2, 4, 8)
  assert np.max(np.abs(a - b)) > 1e-2
  np.testing.assert_array_equal(a, a_again)
  # Slots within an example and examples within a batch differ too.
  assert np.max(np.abs(a[:, 0] - a[:, 1])) > 1e-2
  assert np.max(np.abs(a[0] - a[1])) > 1e-2
  with pytest.raises(flax.errors.InvalidRngError, match="slots"):
    module.apply(params, 2)


def test_learned_initializer_is_shared_across_examples():
  module = INITIALIZERS.build({"name": "learned"}, num_slots=4, slot_size=8)
  params = module.init(_key(0), 3)
  slots = module.apply(params, 3)
  assert slots.shape == (3, 4, 8)
  for example in slots:
    np.testing.assert_array_equal(example, params["params"]["slots"])
  assert np.max(np.abs(slots[0, 0] - slots[0, 1])) > 1e-2


# ----------------------------------------------------------------- encoders


def test_position_grid_values():
  grid = np.asarray(position_grid(3, 5))
  assert grid.shape == (3, 5, 4)
  np.testing.assert_allclose(grid[0, 0], [0, 0, 1, 1])
  np.testing.assert_allclose(grid[0, -1], [0, 1, 1, 0])
  np.testing.assert_allclose(grid[-1, 0], [1, 0, 0, 1])
  np.testing.assert_allclose(grid[-1, -1], [1, 1, 0, 0])
  np.testing.assert_allclose(grid[1, 2], [0.5, 0.5, 0.5, 0.5])
  np.testing.assert_allclose(grid[:, 3, 0], [0, 0.5, 1])  # y varies down rows
  np.testing.assert_allclose(grid[2, :, 1], [0, 0.25, 0.5, 0.75, 1])  # x across
  np.testing.assert_allclose(grid[..., :2] + grid[..., 2:], 1.0)


def test_cnn_encoder_output_shape():
  encoder = ENCODERS.build({"name": "CNN", "features": [4, 4], "strides": [2, 1],
                            "kernel_size": 3, "mlp_size": 8}, output_size=6)
  image = np.ones((2, 10, 6, 3), np.float32)
  features = jax.eval_shape(encoder.apply, jax.eval_shape(encoder.init, _key(0), image),
                            image)
  assert features.shape == (2, 5, 3, 6)


# ----------------------------------------------------------------- decoder


def test_spatial_broadcast_decoder():
  decoder = SpatialBroadcastDecoder(broadcast_size=(3, 2), features=(6, 6, 4),
                                    strides=(2, 1, 3), kernel_size=3,
                                    output_channels=3)
  assert decoder.output_size == (18, 12)
  slots = np.random.default_rng(0).normal(size=(2, 4, 8)).astype(np.float32)
  params = jax.jit(decoder.init)(_key(1), slots)
  apply = jax.jit(decoder.apply)
  outputs = apply(params, slots)
  assert outputs["reconstruction"].shape == (2, 18, 12, 3)
  assert outputs["masks"].shape == (2, 4, 18, 12, 1)
  assert outputs["slot_outputs"].shape == (2, 4, 18, 12, 3)
  masks = np.asarray(outputs["masks"])
  np.testing.assert_allclose(masks.sum(axis=1), 1.0, atol=1e-5)
  assert np.all(masks >= 0)
  np.testing.assert_allclose(
      outputs["reconstruction"],
      np.sum(masks * np.asarray(outputs["slot_outputs"]), axis=1), atol=1e-5, rtol=1e-5)
  # Masks are not uniform: the slots are decoded differently.
  assert np.max(np.abs(masks - 0.25)) > 1e-3

  perm = np.array([3, 1, 0, 2])
  permuted = apply(params, slots[:, perm])
  np.testing.assert_allclose(permuted["masks"], outputs["masks"][:, perm], atol=1e-5)
  np.testing.assert_allclose(permuted["slot_outputs"], outputs["slot_outputs"][:, perm],
                             atol=1e-5)
  np.testing.assert_allclose(permuted["reconstruction"], outputs["reconstruction"],
                             atol=1e-5)


def test_decoder_mismatched_strides_raise():
  decoder = SpatialBroadcastDecoder(broadcast_size=(2, 2), features=(4, 4), strides=(2,))
  with pytest.raises(ValueError, match="strides"):
    decoder.init(_key(0), jnp.zeros((1, 2, 4)))


# ------------------------------------------------------------------- models


def test_default_shapes_config_builds():
  config = _shapes_config()
  model = build_model(config)
  assert tuple(model.decoder.output_size) == tuple(config.data.resolution)
  assert model.initializer.num_slots == config.model.num_slots
  assert model.corrector.slot_size == config.model.slot_size
  # Shapes of init + apply on the full default model (traced, not run).
  image = jax.ShapeDtypeStruct((2, *config.data.resolution, 3), jnp.float32)
  rngs = {"params": _key(0), "slots": _key(1)}
  params = jax.eval_shape(model.init, rngs, {"image": image})
  outputs = jax.eval_shape(
      lambda p, b: model.apply(p, b, rngs={"slots": _key(2)}), params, {"image": image})
  h, w = config.data.resolution
  k, d = config.model.num_slots, config.model.slot_size
  t = config.model.corrector.num_iterations
  assert outputs["reconstruction"].shape == (2, h, w, 3)
  assert outputs["masks"].shape == (2, k, h, w, 1)
  assert outputs["slot_outputs"].shape == (2, k, h, w, 3)
  assert outputs["slots"].shape == (2, k, d)
  assert outputs["attention"].shape == (2, t, k, h // 2, w // 2)  # Encoder stride 2.


def test_build_model_output_shapes():
  config = _small_config()
  model = build_model(config)
  image = _image()
  rngs = {"params": _key(1), "slots": _key(2)}
  params = jax.jit(model.init)(rngs, {"image": image})
  assert set(params["params"]) == {"encoder", "initializer", "corrector", "decoder"}
  apply = jax.jit(lambda p, b, r: model.apply(p, b, train=True, rngs={"slots": r}))
  outputs = apply(params, {"image": image}, _key(3))
  assert outputs["reconstruction"].shape == (2, 16, 16, 3)
  assert outputs["masks"].shape == (2, 3, 16, 16, 1)
  assert outputs["slot_outputs"].shape == (2, 3, 16, 16, 3)
  assert outputs["slots"].shape == (2, 3, 16)
  assert outputs["attention"].shape == (2, 2, 3, 8, 8)
  np.testing.assert_allclose(np.sum(outputs["masks"], axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.sum(outputs["attention"], axis=2), 1.0, atol=1e-5)
  for value in outputs.values():
    assert np.all(np.isfinite(value))


def test_build_model_rejects_zero_slots():
  config = _small_config()
  config.model.num_slots = 0
  with pytest.raises(ConfigError, match="num_slots"):
    build_model(config)


def test_build_model_rejects_zero_iterations():
  config = _small_config()
  config.model.corrector.num_iterations = 0
  with pytest.raises(ConfigError, match="num_iterations"):
    build_model(config)


def test_build_model_rejects_resolution_mismatch():
  config = _shapes_config()
  config.data.resolution = (30, 30)
  with pytest.raises(ConfigError) as info:
    build_model(config)
  message = str(info.value)
  assert "broadcast_size" in message and "strides" in message
  assert "(32, 32)" in message and "(30, 30)" in message


@pytest.mark.parametrize("part,registry", [
    ("encoder", ENCODERS), ("decoder", None), ("initializer", INITIALIZERS),
    ("corrector", CORRECTORS)])
def test_build_model_unknown_part_names(part, registry):
  config = _small_config()
  getattr(config.model, part)["name"] = "Bogus"
  with pytest.raises(ConfigError) as info:
    build_model(config)
  message = str(info.value)
  assert "Bogus" in message
  names = registry.names if registry is not None else ["SpatialBroadcast"]
  assert names
  for name in names:
    assert name in message


def test_build_model_bad_option_raises_config_error():
  config = _small_config()
  config.model.encoder["not_an_option"] = 1
  with pytest.raises(ConfigError, match="encoder"):
    build_model(config)


def test_model_is_slot_permutation_equivariant():
  config = _small_config()
  config.model.initializer = dict(name="learned")
  config.model.corrector.name = "TF-Inv+GRU"
  model = build_model(config)
  image = _image()
  params = jax.jit(model.init)(_key(1), {"image": image})
  apply = jax.jit(model.apply)
  outputs = apply(params, {"image": image})
  perm = np.array([2, 0, 1])
  permuted_params = jax.tree_util.tree_map(lambda x: x, params)
  learned = params["params"]["initializer"]["slots"]
  permuted_params["params"]["initializer"]["slots"] = learned[perm]
  permuted = apply(permuted_params, {"image": image})
  # The masks genuinely differ between slots, so the check is not vacuous.
  assert np.max(np.abs(outputs["masks"][:, 0] - outputs["masks"][:, 1])) > 1e-4
  np.testing.assert_allclose(permuted["masks"], outputs["masks"][:, perm], atol=1e-4)
  np.testing.assert_allclose(permuted["slots"], outputs["slots"][:, perm], atol=1e-4)
  np.testing.assert_allclose(permuted["attention"], outputs["attention"][:, :, perm],
                             atol=1e-4)
  np.testing.assert_allclose(permuted["reconstruction"], outputs["reconstruction"],
                             atol=1e-4)


def test_onednn_says_why_it_is_unavailable(monkeypatch):
  monkeypatch.setattr(onednn, "_find_onednn", lambda: None)
  onednn._load.cache_clear()
  try:
    reason = onednn.unavailable_reason()
    if jax.default_backend() == "cpu":
      assert reason == 'oneDNN is not installed (pip install -e ".[cpu]")'
    assert not onednn.available()
    with pytest.raises(RuntimeError, match="oneDNN"):
      onednn.onednn_conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2)), (1, 1),
                         ((1, 1), (1, 1)))
    # "auto" then falls back to the tap form or XLA's convolution.
    x = jnp.ones((1, 6, 6, 2))
    params = nn.Conv(3, (3, 3)).init(_key(0), x)
    np.testing.assert_allclose(convolution.Conv(3, (3, 3)).apply(params, x),
                               nn.Conv(3, (3, 3)).apply(params, x), atol=1e-5)
  finally:
    monkeypatch.undo()
    onednn._load.cache_clear()


@_ONEDNN
def test_onednn_conv_builds_once_into_the_cache_and_runs_under_vmap(monkeypatch, tmp_path):
  monkeypatch.setenv(onednn.CACHE_VARIABLE, str(tmp_path))
  include, lib = onednn._find_onednn()
  path = onednn._compile(include, lib)
  assert pathlib.Path(path).parent == tmp_path and pathlib.Path(path).exists()
  assert onednn._compile(include, lib) == path and len(list(tmp_path.iterdir())) == 1
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(3, 2, 7, 7, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  got = jax.vmap(lambda x: convolution.onednn_conv(x, w, (2, 2), "SAME"))(x)
  want = jax.vmap(lambda x: convolution.lax_conv(x, w, (2, 2), "SAME"))(x)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
