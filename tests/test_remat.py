"""`config.remat`: the same parameters, outputs and gradients, in every pipeline."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invariant_slots import pipelines
from invariant_slots import config_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_batch(batch: dict, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {k: rng.random(v.shape).astype(v.dtype) if np.issubdtype(v.dtype, np.floating) else v
          for k, v in batch.items()}


def _outputs_and_grads(config, remat: bool):
  config.remat = remat
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  batch = _random_batch(jax.tree.map(np.asarray, pipeline.example_batch(config)))
  rngs = {"params": jax.random.PRNGKey(0), "slots": jax.random.PRNGKey(1)}
  params = model.init(rngs, batch)["params"]

  def loss(params):
    outputs = model.apply({"params": params}, batch, train=True,
                          rngs={"slots": jax.random.PRNGKey(2)})
    floats = [x for x in jax.tree.leaves(outputs) if jnp.issubdtype(x.dtype, jnp.floating)]
    return sum(jnp.mean(jnp.square(x)) for x in floats), outputs

  (_, outputs), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return params, outputs, grads


@pytest.mark.parametrize("config_name,overrides", [
    ("shapes.py", {}),
    ("shapes_video.py", {}),
    ("shapes_multiview.py", {"model.ray_chunk_size": 32}),
    ("shapes_set_prediction.py", {}),
])
def test_remat_keeps_parameters_outputs_and_gradients(config_name, overrides):
  path = os.path.join(REPO, "configs", config_name)
  results = [_outputs_and_grads(config_files.load_config(path, **overrides), remat)
             for remat in (False, True)]
  (params, outputs, grads), (remat_params, remat_outputs, remat_grads) = results
  assert jax.tree.structure(params) == jax.tree.structure(remat_params)
  jax.tree.map(np.testing.assert_array_equal, params, remat_params)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, outputs, remat_outputs)
  jax.tree.map(close, grads, remat_grads)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0


def test_remat_recomputes_in_the_backward_pass():
  config = config_files.load_config(os.path.join(REPO, "configs", "shapes.py"), remat=True)
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  batch = _random_batch(jax.tree.map(np.asarray, pipeline.example_batch(config)))
  params = model.init({"params": jax.random.PRNGKey(0), "slots": jax.random.PRNGKey(1)},
                      batch)["params"]
  loss = lambda p: jnp.mean(model.apply({"params": p}, batch, train=True,
                                        rngs={"slots": jax.random.PRNGKey(2)})["reconstruction"])
  jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
  assert jaxpr.count("remat") + jaxpr.count("checkpoint") >= 3  # encoder, corrector, decoder
