"""Collapse diagnostics on constructed attention, slots and masks with known answers."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from invariant_slots import config_files
from invariant_slots import pipelines
from invariant_slots.lib import diagnostics
from invariant_slots.lib import metrics
from invariant_slots.lib import model_specs
from invariant_slots.lib import training
from invariant_slots.modules import models
from invariant_slots.modules import set_prediction
from tests.training_utils import REPO, tiny_config


def test_attention_entropy_is_one_when_uniform_and_zero_when_one_hot():
  uniform = np.full((1, 4, 6), 0.25)
  one_hot = np.eye(4)[np.array([[0, 1, 2, 3, 0, 1]])].transpose(0, 2, 1)
  np.testing.assert_allclose(diagnostics.attention_entropy(uniform), 1.0, rtol=1e-6)
  np.testing.assert_allclose(diagnostics.attention_entropy(one_hot), 0.0, atol=1e-6)


def test_attention_entropy_matches_scipy():
  attention = np.random.default_rng(0).dirichlet(np.ones(5), size=(3, 7)).transpose(0, 2, 1)
  expected = scipy.stats.entropy(attention, axis=1).mean(axis=-1) / np.log(5)
  np.testing.assert_allclose(diagnostics.attention_entropy(attention), expected, rtol=1e-5)


def test_slot_similarity_matches_numpy_cosines():
  slots = np.random.default_rng(1).normal(size=(2, 4, 8))
  unit = slots / np.linalg.norm(slots, axis=-1, keepdims=True)
  cosine = unit @ unit.transpose(0, 2, 1)
  expected = np.array([c[~np.eye(4, dtype=bool)].mean() for c in cosine])
  np.testing.assert_allclose(diagnostics.slot_similarity(slots), expected, rtol=1e-5)
  same = np.repeat(slots[:, :1], 4, axis=1)
  np.testing.assert_allclose(diagnostics.slot_similarity(same), 1.0, rtol=1e-5)
  np.testing.assert_allclose(diagnostics.slot_similarity(np.eye(4)[None]), 0.0, atol=1e-6)


def test_shares_count_foreground_only_and_sort():
  pred_ids = np.array([[0] * 9 + [2] + [1] * 6, [3] * 16])
  foreground = np.array([[True] * 10 + [False] * 6, [False] * 16])
  shares = np.asarray(diagnostics.slot_shares(pred_ids, foreground, 4))
  np.testing.assert_allclose(shares[0], [0.9, 0.1, 0.0, 0.0])
  assert np.isnan(shares[1]).all()  # No foreground.
  outputs = diagnostics.eval_outputs(np.random.default_rng(2).normal(size=(2, 4, 3)),
                                     np.full((2, 4, 5), 0.25), pred_ids, foreground)
  np.testing.assert_allclose(outputs["collapse_top_share"][0], 0.9)
  np.testing.assert_allclose(outputs["collapse_active_slots"][0], 2.0)
  np.testing.assert_allclose(outputs["collapse_share_rank_2"][0], 0.1)
  assert np.isnan(outputs["collapse_active_slots"][1])


def test_summarize_skips_padding_and_nan_and_collapse_needs_most_examples():
  gathered = {"collapse_top_share": np.array([0.95, np.nan, 0.5, 7.0]), "loss": np.ones(4)}
  mask = np.array([True, True, True, False])
  assert diagnostics.summarize(gathered, mask) == {"top_share": (1.45, 2)}
  assert diagnostics.looks_collapsed(np.array([0.95, 0.97, 0.5]))
  assert not diagnostics.looks_collapsed(np.array([0.95, 0.5, 0.4]))
  assert not diagnostics.looks_collapsed(np.array([np.nan]))


def test_per_module_gradient_norms_add_up_to_the_global_norm(shapes_data_dir):
  config = tiny_config(shapes_data_dir)
  model = models.build_model(config)
  tx = training.make_optimizer(config)
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))}
  state = training.init_state(model, tx, batch, config)
  _, scalars = jax.jit(training.make_train_step(model, tx, config))(state, batch)
  modules = sorted(k for k in scalars if k.startswith("grad_norm_"))
  assert modules == [f"grad_norm_{name}" for name in sorted(state.params)]
  total = np.sqrt(sum(float(scalars[k]) ** 2 for k in modules))
  np.testing.assert_allclose(total, scalars["grad_norm"], rtol=1e-5)
  logged = metrics.mean_train_scalars([jax.device_get(scalars)])
  assert set(logged) == {"loss", "grad_norm", "learning_rate", *modules}


@pytest.mark.parametrize("pipeline,config_name", [
    ("images", "shapes.py"), ("video", "shapes_video.py"), ("multiview", "shapes_multiview.py"),
    ("set_prediction", "shapes_set_prediction.py")])
def test_every_pipeline_eval_step_returns_the_diagnostics(pipeline, config_name):
  config = config_files.load_config(os.path.join(REPO, "configs", config_name),
                                    eval_slice_length=1)
  assert config.pipeline == pipeline
  pipe = pipelines.get_pipeline(config)
  model = pipe.build_model(config)
  batch = model_specs.example_batch(config)
  batch = eval_batch(pipeline, batch, config)
  params = model.init({"params": jax.random.PRNGKey(0), "slots": jax.random.PRNGKey(1)},
                      model_specs.example_batch(config), train=False)["params"]
  outputs = pipe.make_eval_step(model, config)(params, batch, jax.random.PRNGKey(2))
  num_slots = config.model.num_slots
  expected = {"collapse_attention_entropy", "collapse_slot_similarity", "collapse_top_share",
              "collapse_active_slots"} | {f"collapse_share_rank_{r + 1}" for r in range(num_slots)}
  assert expected <= set(outputs)
  for key in expected:
    assert outputs[key].shape == (1,), key
  assert 0.0 <= float(outputs["collapse_attention_entropy"][0]) <= 1.0 + 1e-5


def eval_batch(pipeline: str, batch: dict, config) -> dict:
  """`batch` with the ground truth each pipeline's eval step reads (all background)."""
  batch = dict(batch)
  if pipeline == "images":
    batch["segmentations"] = jnp.zeros(batch["image"].shape[:-1] + (1,), jnp.int32)
  elif pipeline == "video":
    video = batch["video"]
    batch["segmentations"] = jnp.zeros(video.shape[:-1] + (1,), jnp.int32)
    for name, channels in config.model.targets.items():
      batch.setdefault(name, jnp.zeros(video.shape[:-1] + (channels,)))
  elif pipeline == "multiview":
    rays = batch["target_origins"].shape[:2]
    batch["target_color"] = jnp.zeros(rays + (3,))
    batch["target_ids"] = jnp.ones(rays, jnp.int32)
  else:
    properties = config.data.properties
    size = set_prediction.property_size(properties.num_coords, properties.category_sizes)
    batch["target"] = jnp.zeros((1, config.model.num_slots, size))
  return batch
