"""Multi-process, sharded and preemption tests: real processes on this machine."""

import glob
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from invariant_slots import config_files

from tests.training_utils import REPO, SHAPES_CONFIG, child_env, read_scalars, run_main, tiny_flags

STEPS = 10


def _losses(workdir) -> list[float]:
  values = read_scalars(str(workdir), "train/loss")
  assert sorted(values) == list(range(1, STEPS + 1)), values
  return [values[s] for s in range(1, STEPS + 1)]


def test_two_processes_match_one_process_and_restore_in_one(tmp_path, shapes_data_dir):
  # Two data shards in both runs, so the global batches are the same.
  flags = tiny_flags(shapes_data_dir, num_train_steps=STEPS, **{"data.num_shards": 2})
  single = tmp_path / "single"
  result = run_main(flags + [f"--workdir={single}"], num_devices=4)
  assert result.returncode == 0, result.stderr[-3000:]

  multi = tmp_path / "multi"
  env = dict(os.environ, DEVICES_PER_PROCESS="2", JAX_PLATFORMS="cpu")
  result = subprocess.run(["bash", "launch/local.sh", "2", SHAPES_CONFIG, str(multi), *flags[1:]],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "Process 1 of 2; 2 local of 4 global devices." in result.stdout + result.stderr
  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5, atol=1e-6)
  # Only process 0 writes metrics; the checkpoint is complete.
  assert len(glob.glob(str(multi / "events.out.tfevents.*"))) == 1
  assert os.path.isdir(multi / "checkpoints" / str(STEPS))

  # A single process restores the two-process checkpoint and evaluates it.
  result = run_main(tiny_flags(shapes_data_dir, num_train_steps=0) + [f"--workdir={multi}"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"eval: step {STEPS}" in result.stdout


def test_fsdp_matches_data_parallel(tmp_path, shapes_data_dir):
  losses = []
  for fsdp in (1, 2):
    workdir = tmp_path / f"fsdp_{fsdp}"
    # A small learning rate keeps float reordering (reduce-scatter instead of
    # all-reduce) from being amplified by the training dynamics over 10 steps.
    flags = tiny_flags(shapes_data_dir, num_train_steps=STEPS, learning_rate=1e-4,
                       **{"mesh.fsdp": fsdp, "mesh.fsdp_min_size": 1024})
    result = run_main(flags + [f"--workdir={workdir}"], num_devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    losses.append(_losses(workdir))
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5, atol=1e-6)


def test_sigterm_checkpoints_and_resume_reproduces_the_trajectory(tmp_path, shapes_data_dir):
  steps = 60
  flags = tiny_flags(shapes_data_dir, num_train_steps=steps, checkpoint_every_steps=1000)
  straight = tmp_path / "straight"
  result = run_main(flags + [f"--workdir={straight}"])
  assert result.returncode == 0, result.stderr[-3000:]

  interrupted = tmp_path / "interrupted"
  env = child_env()  # One device, as in the other runs: the same reduction order.
  process = subprocess.Popen(
      [sys.executable, "-m", "invariant_slots.main", *flags, f"--workdir={interrupted}"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in process.stderr:  # Wait until training is under way.
    if "train/loss" in line:
      break
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  saved = [int(d) for d in os.listdir(interrupted / "checkpoints") if d.isdigit()]
  assert len(saved) == 1 and 0 < saved[0] < steps, saved

  result = run_main(flags + [f"--workdir={interrupted}"])
  assert result.returncode == 0, result.stderr[-3000:]
  expected = read_scalars(str(straight), "train/loss")
  actual = read_scalars(str(interrupted), "train/loss")
  assert sorted(actual) == sorted(expected) == list(range(1, steps + 1))
  np.testing.assert_allclose([actual[s] for s in range(1, steps + 1)],
                             [expected[s] for s in range(1, steps + 1)], rtol=1e-6)


def test_cpu_device_count_divides_the_batch():
  from invariant_slots.lib import validation  # pylint: disable=g-import-not-at-top
  from invariant_slots.main import cpu_device_count  # pylint: disable=g-import-not-at-top
  from invariant_slots.registry import ConfigError  # pylint: disable=g-import-not-at-top
  assert cpu_device_count(0, batch_size=16, cores=2) == 2
  assert cpu_device_count(0, batch_size=6, cores=4) == 3  # the largest divisor of 6 <= 4
  assert cpu_device_count(0, batch_size=7, cores=2) == 1
  assert cpu_device_count(3, batch_size=16, cores=8) == 2
  assert cpu_device_count(1, batch_size=16, cores=8) == 1
  config = config_files.load_config(SHAPES_CONFIG, cpu_devices=-1)
  with pytest.raises(ConfigError, match="cpu_devices must be >= 0"):
    validation.check_values(config)


def test_cpu_devices_split_matches_one_device(tmp_path, shapes_data_dir):
  flags = tiny_flags(shapes_data_dir, num_train_steps=STEPS)
  one = tmp_path / "one"
  result = run_main(flags + [f"--workdir={one}"], num_devices=1)
  assert result.returncode == 0, result.stderr[-3000:]

  split = tmp_path / "split"
  env = {k: v for k, v in child_env().items() if k != "XLA_FLAGS"}
  result = subprocess.run(
      [sys.executable, "-m", "invariant_slots.main", *flags, "--config.cpu_devices=2",
       f"--workdir={split}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "CPU host split into 2 devices" in result.stderr
  np.testing.assert_allclose(_losses(split), _losses(one), rtol=1e-4)
