"""End-to-end trainer tests on a tiny synthetic dataset."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invariant_slots import pipelines
from invariant_slots.lib import training
from invariant_slots.lib import validation
from invariant_slots.modules.correctors import CORRECTORS
from invariant_slots.registry import ConfigError
from tests.training_utils import (REPO, read_scalars, run_main, tiny_config, tiny_flags,
                                  train_and_evaluate)


def test_two_devices_give_the_same_losses_as_one(tmp_path, shapes_data_dir):
  losses = {}
  for devices in (1, 2):
    workdir = tmp_path / f"devices_{devices}"
    result = run_main(tiny_flags(shapes_data_dir) + [f"--workdir={workdir}"], devices)
    assert result.returncode == 0, result.stderr[-3000:]
    losses[devices] = read_scalars(str(workdir), "train/loss")
  assert sorted(losses[1]) == [1, 2, 3, 4]
  np.testing.assert_allclose([losses[2][s] for s in range(1, 5)],
                             [losses[1][s] for s in range(1, 5)], rtol=1e-5, atol=1e-6)


def test_resume_reproduces_the_uninterrupted_run(tmp_path, shapes_data_dir):
  options = dict(num_train_steps=6, lr_schedule="constant", checkpoint_every_steps=3)
  straight = str(tmp_path / "straight")
  train_and_evaluate(tiny_config(shapes_data_dir, **options), straight)
  resumed = str(tmp_path / "resumed")
  train_and_evaluate(tiny_config(shapes_data_dir, **{**options, "num_train_steps": 3}),
                             resumed)
  train_and_evaluate(tiny_config(shapes_data_dir, **options), resumed)
  expected = read_scalars(straight, "train/loss")
  actual = read_scalars(resumed, "train/loss")
  assert sorted(actual) == sorted(expected) == list(range(1, 7))
  # Steps 4-6 ran after the restart: same parameters, optimizer state and batches.
  np.testing.assert_allclose([actual[s] for s in (4, 5, 6)],
                             [expected[s] for s in (4, 5, 6)], rtol=1e-6)


@pytest.mark.parametrize("name", CORRECTORS.names)
def test_every_corrector_trains_and_evaluates(tmp_path, shapes_data_dir, name):
  workdir = str(tmp_path / name)
  config = tiny_config(shapes_data_dir, num_train_steps=3, **{"model.corrector.name": name})
  scalars = train_and_evaluate(config, workdir)
  for key in ("eval/fg_ari", "eval/ari", "eval/fg_miou", "eval/loss", "eval/psnr"):
    assert np.isfinite(scalars[key]), (key, scalars)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))
  assert read_scalars(workdir, "eval/fg_ari")[3] == pytest.approx(scalars["eval/fg_ari"])
  for key in ("eval/collapse/attention_entropy", "eval/collapse/top_share",
              "train/grad_norm_corrector"):
    assert read_scalars(workdir, key), key
  # num_train_steps=0 evaluates the checkpoint: same parameters, same numbers.
  again = train_and_evaluate(tiny_config(shapes_data_dir, num_train_steps=0,
                                                 **{"model.corrector.name": name}), workdir)
  assert again["eval/fg_ari"] == pytest.approx(scalars["eval/fg_ari"], abs=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({"model.num_slots": 0}, "num_slots must be >= 1"),
    ({"data.resolution": (48, 48)}, "broadcast_size"),
    ({"model.corrector.name": "SA-XL"}, "valid names: SA, SA-noGRU"),
])
def test_bad_config_errors(tmp_path, shapes_data_dir, overrides, message):
  config = tiny_config(shapes_data_dir, **overrides)
  with pytest.raises(ConfigError, match=message):
    train_and_evaluate(config, str(tmp_path / "w"))


def test_missing_dataset_names_the_synthetic_config(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "invariant_slots.main", "--config=configs/clevr.py",
       f"--workdir={tmp_path / 'w'}", f"--config.data.path={tmp_path / 'nothing.tfrecords'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  error_lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(error_lines) == 1, result.stderr[-2000:]
  assert "nothing.tfrecords" in error_lines[0] and "configs/shapes.py" in error_lines[0]


def test_unknown_corrector_on_the_command_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "invariant_slots.main", "--config=configs/shapes.py",
       f"--workdir={tmp_path / 'w'}", "--config.model.corrector.name=Foo"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert f"error: Unknown corrector 'Foo'; valid names: {', '.join(CORRECTORS.names)}." \
      in result.stderr.splitlines()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, shapes_data_dir):
  workdir = str(tmp_path / "diverge")
  train_and_evaluate(tiny_config(shapes_data_dir, num_train_steps=2,
                                         checkpoint_every_steps=2), workdir)
  # An absurd learning rate overflows the parameters within a few more steps.
  config = tiny_config(shapes_data_dir, num_train_steps=8, checkpoint_every_steps=2,
                       learning_rate=1e30, lr_schedule="constant")
  with pytest.raises(FloatingPointError, match=r"Loss is (nan|inf) at step \d+.*step 2"):
    train_and_evaluate(config, workdir)
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                if d.isdigit()) == [2]


def test_train_and_eval_steps_compile_once(tmp_path, shapes_data_dir, monkeypatch):
  jitted = []
  real_jit = jax.jit

  def recording_jit(*args, **kwargs):
    function = real_jit(*args, **kwargs)
    jitted.append(function)
    return function

  monkeypatch.setattr(jax, "jit", recording_jit)
  config = tiny_config(shapes_data_dir, num_train_steps=12, eval_every_steps=4)
  train_and_evaluate(config, str(tmp_path / "w"))
  # init, train step and eval step; each traced and compiled exactly once over
  # 12 steps and 3 evaluations of real input batches.
  assert len(jitted) >= 3
  assert [f._cache_size() for f in jitted] == [1] * len(jitted)  # pylint: disable=protected-access


def test_bfloat16_compute_keeps_float32_state(shapes_data_dir):
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(shapes_data_dir, dtype=dtype)
    pipeline = pipelines.get_pipeline(config)
    model = pipeline.build_model(config)
    tx = training.make_optimizer(config)
    state = training.init_state(model, tx, pipeline.example_batch(config), config)
    image = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    state, step_metrics = jax.jit(training.make_train_step(model, tx, config))(
        state, {"image": image})
    losses[dtype] = float(step_metrics["loss"])
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert leaf.dtype == jnp.float32
  assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)
  assert losses["bfloat16"] != losses["float32"]  # The step really ran in bfloat16.


def test_unknown_dtype_is_a_config_error(shapes_data_dir):
  config = tiny_config(shapes_data_dir, dtype="int8")
  with pytest.raises(ConfigError, match="dtype must be float32, bfloat16"):
    training.make_train_step(None, None, config)


def _sgd_step(config, batch):
  """Parameters after one plain SGD step (lr 1) and the step's metrics."""
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = optax.sgd(1.0)
  state = training.init_state(model, tx, pipeline.example_batch(config), config)
  new_state, step_metrics = jax.jit(training.make_train_step(model, tx, config))(state, batch)
  return state.params, new_state.params, step_metrics


def test_gradient_accumulation_equals_the_full_batch(shapes_data_dir):
  batch = {"image": np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)}
  results = [_sgd_step(tiny_config(shapes_data_dir, batch_size=16, grad_accum_steps=accum), batch)
             for accum in (1, 4)]
  (before, full, full_metrics), (_, accumulated, accumulated_metrics) = results
  np.testing.assert_allclose(accumulated_metrics["loss"], full_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(accumulated_metrics["grad_norm"], full_metrics["grad_norm"],
                             rtol=1e-4)
  steps = lambda after: jax.tree.map(lambda a, b: np.asarray(a - b), after, before)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6),
               steps(accumulated), steps(full))
  assert full_metrics["grad_norm"] > 0


def test_micro_batches_take_every_kth_row():
  batch = {"x": np.arange(12).reshape(6, 2)}
  micro = training.micro_batches(batch, 3)["x"]
  np.testing.assert_array_equal(micro[:, :, 0], [[0, 6], [2, 8], [4, 10]])


def test_a_batch_that_grad_accum_steps_does_not_divide_is_refused(shapes_data_dir):
  config = tiny_config(shapes_data_dir, batch_size=10, grad_accum_steps=4)
  with pytest.raises(ConfigError, match="batch_size 10 is not divisible by grad_accum_steps 4"):
    validation.check_values(config)


def _optimizer_config(**freeze):
  config = tiny_config(None, learning_rate=0.1, warmup_steps=0, lr_schedule="constant",
                       max_grad_norm=0.0)
  if freeze:
    config.freeze = freeze
  return config


def test_freeze_holds_matching_parameters_back_then_follows_adam():
  params = {"encoder": {"head": {"TransformerBlock_0": {"kernel": jnp.ones(3)},
                                 "Dense_0": {"kernel": jnp.ones(3)}}},
            "decoder": {"kernel": jnp.ones(2)}}
  frozen_tx = training.make_optimizer(_optimizer_config(
      params="encoder/head/TransformerBlock_.*", until_step=3))
  plain_tx = training.make_optimizer(_optimizer_config())
  frozen_state, plain_state = frozen_tx.init(params), plain_tx.init(params)
  rng = np.random.default_rng(0)
  for step in range(6):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    frozen_updates, frozen_state = frozen_tx.update(grads, frozen_state, params)
    plain_updates, plain_state = plain_tx.update(grads, plain_state, params)
    block = frozen_updates["encoder"]["head"].pop("TransformerBlock_0")["kernel"]
    plain_block = plain_updates["encoder"]["head"].pop("TransformerBlock_0")["kernel"]
    # Held back for steps 0-2; afterwards Adam's update, moments included.
    np.testing.assert_allclose(block, plain_block if step >= 3 else np.zeros(3), rtol=1e-6)
    assert np.abs(plain_block).min() > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                 frozen_updates, plain_updates)


def test_a_freeze_pattern_that_matches_nothing_names_the_paths():
  tx = training.make_optimizer(_optimizer_config(params="encoder/head/Block_.*", until_step=3))
  with pytest.raises(ConfigError, match=r"freeze.params 'encoder/head/Block_\.\*' matches no "
                                        r"parameter; paths start with one of decoder, encoder"):
    tx.init({"encoder": {"head": {"Dense_0": {"kernel": jnp.ones(3)}}},
             "decoder": {"kernel": jnp.ones(2)}})


@pytest.mark.parametrize("freeze, message", [
    (dict(params="encoder/(head", until_step=3), "freeze.params 'encoder/\\(head' is not a "
                                                 "regular expression"),
    (dict(params="encoder/.*", until_step=-1), "freeze.until_step must be >= 0, got -1"),
])
def test_a_bad_freeze_is_refused(freeze, message):
  with pytest.raises(ConfigError, match=message):
    validation.check_values(_optimizer_config(**freeze))
