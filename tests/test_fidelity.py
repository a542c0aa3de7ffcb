"""The published networks: parameter counts module by module, and their structures.

The reference counts are those of the public code: SAVi++'s conditional MOVi
config (google-research/slot-attention-video), the OSRT reproduction's MSN
config (stelzner/osrt) and Locatello et al.'s CLEVR autoencoder. Counting uses
`jax.eval_shape`, so nothing is computed. docs/fidelity.md lists every
remaining difference.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from invariant_slots import pipelines
from invariant_slots.datasets import multi_object
from invariant_slots import config_files
from invariant_slots import datasets
from invariant_slots.lib import training
from invariant_slots.modules import attention
from invariant_slots.modules import decoders
from invariant_slots.modules import video
from invariant_slots.modules.correctors import CORRECTORS
from tests.training_utils import REPO

# torch's GRUCell has two bias vectors per gate; flax's has one per gate plus
# the candidate's hidden bias, so it lacks two redundant vectors of slot_size.
OSRT_GRU_REDUNDANT_BIASES = 2 * 1536

SAVI_PLUS_PLUS = {
    "encoder backbone": 21_276_992,
    "encoder head": 697_728,
    "slot initializer": 34_176,
    "corrector": 213_888,
    "predictor": 395_776,
    "decoder": 512_965,
}
OSRT = {
    "encoder CNN": 5_300_640,
    "patch projection": 590_592,
    "first-view embedding": 0,
    "encoder Transformer": 23_623_680,
    "encoder output LN + Dense": 0,
    "slot init": 49_152,
    "corrector": 28_333_056 - OSRT_GRU_REDUNDANT_BIASES,
    "decoder query MLP": 130_140,
    "decoder allocation Transformer": 12_763_248,
    "decoder slot mixing": 2_635_776,
    "decoder render MLP": 9_724_419,
}
# Keras's GRU (reset_after) carries 128 redundant biases: 890,308 there.
CLEVR6_TOTAL = 890_180

# Module -> prefixes of parameter paths.
VIDEO_MODULES = {
    "encoder backbone": ("encoder/backbone",),
    "encoder head": ("encoder/head",),
    "slot initializer": ("initializer",),
    "corrector": ("recurrence/corrector",),
    "predictor": ("recurrence/predictor",),
    "decoder": ("decoder",),
}
OSRT_MODULES = {
    "encoder CNN": ("encoder/conv_",),
    "patch projection": ("encoder/patch_projection",),
    "first-view embedding": ("encoder/first_view_embedding",),
    "encoder Transformer": ("encoder/transformer_",),
    "encoder output LN + Dense": ("encoder/output_",),
    "slot init": ("initializer",),
    "corrector": ("corrector",),
    "decoder query MLP": ("decoder/query_mlp",),
    "decoder allocation Transformer": ("decoder/allocation_",),
    "decoder slot mixing": ("decoder/mixing_", "decoder/slot_norm"),
    "decoder render MLP": ("decoder/render_",),
}


def config_path(name: str) -> str:
  return os.path.join(REPO, "configs", f"{name}.py")


def parameter_shapes(config):
  """`{path: shape}` of the model's parameters, without computing them."""
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  key = jax.random.PRNGKey(0)
  variables = jax.eval_shape(lambda: model.init({"params": key, "slots": key},
                                                pipeline.example_batch(config)))
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  return {"/".join(k.key for k in path): leaf.shape for path, leaf in flat}


def module_counts(shapes, modules: dict[str, tuple[str, ...]]) -> dict[str, int]:
  """Parameters per module; every parameter must belong to exactly one module."""
  counts = dict.fromkeys(modules, 0)
  for path, shape in shapes.items():
    owners = [m for m, prefixes in modules.items() if path.startswith(prefixes)]
    assert len(owners) == 1, f"{path} belongs to {owners}"
    counts[owners[0]] += int(np.prod(shape))
  return counts


@pytest.mark.parametrize("name,num_slots", [("movi_c", 11), ("movi_e", 24)])
def test_savi_plus_plus_configs_have_the_published_parameter_counts(name, num_slots):
  config = config_files.load_config(config_path(name))
  assert config.model.num_slots == num_slots
  assert module_counts(parameter_shapes(config), VIDEO_MODULES) == SAVI_PLUS_PLUS
  assert sum(SAVI_PLUS_PLUS.values()) == 23_131_525


def test_msn_hard_config_has_the_published_osrt_parameter_counts():
  shapes = parameter_shapes(config_files.load_config(config_path("msn_hard")))
  assert module_counts(shapes, OSRT_MODULES) == OSRT
  assert sum(OSRT.values()) + OSRT_GRU_REDUNDANT_BIASES == 83_150_703
  assert shapes["initializer/slots"] == (32, 1536)  # Learned, not sampled.


def test_clevr6_config_is_the_paper_setting():
  config = config_files.load_config(config_path("clevr6"))
  assert sum(int(np.prod(s)) for s in parameter_shapes(config).values()) == CLEVR6_TOTAL
  assert (config.model.num_slots, config.data.max_objects, config.batch_size) == (7, 6, 64)
  assert (config.learning_rate, config.warmup_steps, config.lr_decay_steps,
          config.lr_decay_rate, config.num_train_steps) == (4e-4, 10_000, 100_000, 0.5, 500_000)


def _train_step_batch(config, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A batch of one example at the config's resolution."""
  height, width = config.data.resolution
  uniform = lambda *shape: rng.uniform(size=shape).astype(np.float32)
  if config.pipeline == "video":
    num_objects = config.data.max_instances
    return {"video": uniform(1, 2, height, width, 3),
            "boxes": np.tile(np.array([0.1, 0.2, 0.5, 0.6], np.float32), (1, 2, num_objects, 1)),
            "centers": np.full((1, 2, num_objects, 2), 0.3, np.float32),
            "flow": uniform(1, 2, height, width, 3), "depth": uniform(1, 2, height, width, 1)}
  if config.pipeline == "multiview":
    return {"input_image": uniform(1, 2, height, width, 3),
            "input_origins": uniform(1, 2, height, width, 3),
            "input_directions": uniform(1, 2, height, width, 3),
            "target_origins": uniform(1, 8, 3), "target_directions": uniform(1, 8, 3),
            "target_color": uniform(1, 8, 3)}
  return {"image": uniform(1, height, width, 3)}


# Smaller inputs change no parameter: the same networks on 32x32 frames (16x16 views).
SMALL_INPUTS = {
    "movi_c": {"data.resolution": (32, 32), "model.decoder.broadcast_size": (2, 2)},
    "movi_e": {"data.resolution": (32, 32), "model.decoder.broadcast_size": (2, 2)},
    "msn_hard": {"data.resolution": (16, 16)},
    "clevr6": {"data.resolution": (32, 32), "model.decoder.broadcast_size": (2, 2)},
}


def train_step_shapes(config):
  """Loss and parameter shapes after one train step, traced without computing."""
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  batch = _train_step_batch(config, np.random.default_rng(0))

  def step():
    key = jax.random.PRNGKey(0)
    params = model.init({"params": key, "slots": key}, batch)["params"]
    state = training.TrainState(step=jnp.asarray(0), params=params, opt_state=tx.init(params),
                               rng=key)
    new_state, step_metrics = training.make_train_step(model, tx, config)(state, batch)
    return new_state.params, step_metrics["loss"]

  return jax.eval_shape(step)


@pytest.mark.parametrize("corrector", CORRECTORS.names)
@pytest.mark.parametrize("network", ["movi_c", "movi_e", "msn_hard", "clevr6"])
def test_every_corrector_builds_and_trains_a_step_in_every_published_network(network,
                                                                            corrector):
  config = config_files.load_config(config_path(network), **{
      **SMALL_INPUTS[network], "batch_size": 1, "model.corrector.name": corrector})
  params, loss = train_step_shapes(config)
  assert loss.shape == ()
  corrector_params = params["recurrence"]["corrector"] if "recurrence" in params else (
      params["corrector"])
  assert jax.tree.leaves(corrector_params), "the corrector has parameters"


def _reduced(network: str) -> dict:
  """The published structure with every width cut down, for a computed step."""
  if network == "movi_c":
    return {"data.resolution": (32, 32), "model.slot_size": 16, "model.encoder.width": 4,
            "model.encoder.stage_sizes": (1, 1, 1, 1),
            "model.encoder.mlp_size": 8,
            "model.encoder.transformer": dict(num_layers=1, num_heads=2, qkv_size=8,
                                              transformer_mlp_size=16),
            "model.initializer.hidden_size": 16, "model.corrector.qkv_size": 32,
            "model.predictor": dict(name="Transformer", num_heads=2, qkv_size=32, mlp_size=32),
            "model.decoder.features": (8, 8, 8, 8), "model.decoder.broadcast_size": (2, 2)}
  return {"data.resolution": (16, 16), "model.slot_size": 32, "model.num_slots": 4,
          "model.encoder.features": [16, 16, 16], "model.encoder.hidden_features": [8, 8, 8],
          "model.encoder.hidden_size": 16, "model.encoder.num_layers": 1,
          "model.encoder.num_heads": 2, "model.encoder.qkv_size": 16,
          "model.encoder.mlp_size": 16, "model.corrector.mlp_size": 32,
          "model.decoder.hidden_size": 12, "model.decoder.query_mlp_size": 24,
          "model.decoder.num_layers": 1, "model.decoder.num_heads": 2,
          "model.decoder.qkv_size": 16, "model.decoder.mlp_size": 24,
          "model.decoder.mixing_size": 16, "model.decoder.render_sizes": [16],
          "model.ray_encoding.origin_octaves": 2, "model.ray_encoding.direction_octaves": 1}


@pytest.mark.parametrize("network", ["movi_c", "msn_hard"])
def test_published_structures_compute_a_train_step(network):
  config = config_files.load_config(config_path(network), **{
      **_reduced(network), "batch_size": 1, "warmup_steps": 0})
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  batch = _train_step_batch(config, np.random.default_rng(0))
  key = jax.random.PRNGKey(0)
  params = jax.jit(lambda: model.init({"params": key, "slots": key}, batch))()["params"]
  state = training.TrainState(step=jnp.asarray(0), params=params, opt_state=tx.init(params),
                             rng=key)
  new_state, step_metrics = jax.jit(training.make_train_step(model, tx, config))(state, batch)
  assert np.isfinite(float(step_metrics["loss"]))
  changed = jax.tree_util.tree_flatten_with_path(jax.tree.map(
      lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params))[0]
  unchanged = ["/".join(k.key for k in path) for path, leaf in changed if not leaf]
  # Only the insides of the residual branches, whose last norm starts at scale 0.
  assert all(path.startswith("encoder/backbone/ResidualBlock_") for path in unchanged), unchanged
  assert len(unchanged) < len(changed) / 2


@pytest.mark.parametrize("pre_norm", [True, False])
def test_transformer_block_equals_flax_attention_with_numpy_layers(pre_norm):
  block = attention.TransformerBlock(num_heads=2, mlp_size=12, qkv_size=8, pre_norm=pre_norm)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6))
  params = block.init(jax.random.PRNGKey(1), x)["params"]
  flax_attention = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8)
  attend = lambda y: flax_attention.apply(  # pylint: disable=g-long-lambda
      {"params": params["MultiHeadAttention_0"]}, y, y)

  def layer_norm(y, name):
    y = np.asarray(y)
    normed = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-6)
    return normed * np.asarray(params[name]["scale"]) + np.asarray(params[name]["bias"])

  def mlp(y):
    hidden = np.maximum(y @ params["mlp_hidden"]["kernel"] + params["mlp_hidden"]["bias"], 0.0)
    return hidden @ params["mlp_output"]["kernel"] + params["mlp_output"]["bias"]

  if pre_norm:
    y = x + attend(layer_norm(x, "LayerNorm_0"))
    expected = y + mlp(layer_norm(y, "LayerNorm_1"))
  else:
    y = layer_norm(x + attend(x), "LayerNorm_0")
    expected = layer_norm(y + mlp(y), "LayerNorm_1")
  np.testing.assert_allclose(block.apply({"params": params}, x), expected, atol=1e-5)


def test_zero_init_residual_block_starts_as_identity_with_the_same_parameters():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6))
  default = attention.TransformerBlock(num_heads=2, mlp_size=12, qkv_size=8)
  zero = attention.TransformerBlock(num_heads=2, mlp_size=12, qkv_size=8,
                                    zero_init_residual=True)
  params = zero.init(jax.random.PRNGKey(1), x)["params"]
  shapes = lambda p: jax.tree.map(jnp.shape, p)
  assert shapes(params) == shapes(default.init(jax.random.PRNGKey(1), x)["params"])
  np.testing.assert_array_equal(zero.apply({"params": params}, x), x)
  # Only the two output projections start at zero; gradients still reach them.
  grads = jax.grad(lambda p: jnp.sum(zero.apply({"params": p}, x) ** 2))(params)
  assert float(jnp.abs(grads["mlp_output"]["kernel"]).max()) > 0
  assert float(jnp.abs(grads["MultiHeadAttention_0"]["out"]["kernel"]).max()) > 0


def test_block_without_qkv_bias_and_exact_gelu():
  block = attention.TransformerBlock(num_heads=2, mlp_size=12, qkv_bias=False,
                                     activation="gelu_exact")
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 6))
  params = block.init(jax.random.PRNGKey(1), x)["params"]["MultiHeadAttention_0"]
  assert set(params["query"]) == {"kernel"} and set(params["out"]) == {"kernel", "bias"}
  values = np.linspace(-4.0, 4.0, 41)
  exact = 0.5 * values * (1.0 + scipy.special.erf(values / np.sqrt(2.0)))
  np.testing.assert_allclose(attention.ACTIVATIONS["gelu_exact"](values), exact, atol=1e-6)
  assert np.abs(attention.ACTIVATIONS["gelu"](values) - exact).max() > 1e-4


def test_zero_box_background_is_the_box_mlp_of_a_zero_box():
  initializer = video.ConditionedSlots(slot_size=6, hidden_size=5, zero_box_background=True)
  boxes = jax.random.uniform(jax.random.PRNGKey(0), (2, 1, 3, 4))
  params = initializer.init(jax.random.PRNGKey(1), {"boxes": boxes})["params"]
  assert "background" not in params
  slots = np.asarray(initializer.apply({"params": params}, {"boxes": boxes}))
  dense = lambda y, name: y @ params[name]["kernel"] + params[name]["bias"]
  mlp = lambda y: dense(np.maximum(dense(y, "Dense_0"), 0.0), "Dense_1")
  np.testing.assert_allclose(slots[:, 0], np.broadcast_to(mlp(np.zeros(4)), (2, 6)), atol=1e-6)
  np.testing.assert_allclose(slots[:, 1:], mlp(np.asarray(boxes[:, 0])), atol=1e-6)


def test_dense_readout_equals_early_fusion_of_the_features():
  decoder = decoders.SpatialBroadcastDecoder(broadcast_size=(4, 4), features=[8, 8],
                                             strides=[2, 1], kernel_size=3, output_channels=4,
                                             readout="dense", position_embedding="linear")
  slots = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 10))
  variables = decoder.init(jax.random.PRNGKey(1), slots)
  outputs, state = decoder.apply(variables, slots, capture_intermediates=True)
  features = jax.nn.relu(state["intermediates"]["Conv_0"]["__call__"][0])
  features = features.reshape(2, 3, 8, 8, 8)
  fused = np.sum(np.asarray(outputs["masks"]) * features, axis=1)  # Early fusion.
  head = variables["params"]["targets"]
  np.testing.assert_allclose(outputs["reconstruction"], fused @ head["kernel"] + head["bias"],
                             atol=1e-5)
  assert variables["params"]["SoftPositionEmbed_0"]["Dense_0"]["kernel"].shape == (2, 10)


def test_slot_attention_qkv_size_and_no_mlp():
  corrector = CORRECTORS.get("SA")(slot_size=8, num_iterations=2, qkv_size=12, mlp_size=0)
  slots = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8))
  inputs = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 5))
  params = corrector.init(jax.random.PRNGKey(2), slots, inputs)["params"]
  assert "mlp" not in params
  assert params["attention"]["key"]["kernel"].shape == (5, 1, 12)
  assert params["gru"]["ir"]["kernel"].shape == (12, 8)  # The GRU reads 12-d updates.
  out, _ = corrector.apply({"params": params}, slots, inputs)
  permutation = np.array([2, 0, 1])
  permuted, _ = corrector.apply({"params": params}, slots[:, permutation], inputs)
  np.testing.assert_allclose(permuted, np.asarray(out)[:, permutation], atol=1e-5)


def test_max_objects_keeps_only_scenes_with_that_many_objects(tmp_path):
  rng = np.random.default_rng(0)
  examples = [multi_object.random_example("clevr_with_masks", rng) for _ in range(12)]
  path = str(tmp_path / "clevr.tfrecords")
  multi_object.write_examples("clevr_with_masks", path, examples)
  data = config_files.load_config(config_path("clevr6")).data
  data.path, data.num_eval_examples = path, 2
  counts = [int(e["visibility"][1:].sum()) for e in examples]
  kept = [c for c in counts if c <= 6]
  assert 2 < len(kept) < len(counts)
  evaluation, _ = datasets.DATA_SOURCES.get("multi_object")(data, False, 1, 0)
  train, _ = datasets.DATA_SOURCES.get("multi_object")(data, True, 1, 0)
  seen = [int(tf.reduce_sum(f["visibility"][1:])) for f in list(evaluation) + list(train)]
  assert seen == kept
