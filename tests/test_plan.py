"""`python -m invariant_slots.plan`: the memory plan of a config, run as users run it."""

import importlib.util
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from invariant_slots import config_files
from invariant_slots.lib import model_specs
from tests.training_utils import REPO, child_env

SHAPES = os.path.join(REPO, "configs", "shapes.py")


def _plan(*args):
  return subprocess.run([sys.executable, "-m", "invariant_slots.plan", *args], cwd=REPO,
                        env=child_env(1), capture_output=True, text=True, timeout=600,
                        check=False)


def _mib(value: str) -> float:
  number, unit = value.split()
  return float(number) * (1024 if unit == "GiB" else 1)


@pytest.fixture(scope="module")
def shapes_plan() -> dict[str, str]:
  result = _plan(f"--config={SHAPES}", "--devices=2", "--hbm_gib=16",
                 "--config.mesh.fsdp_min_size=1024")
  assert result.returncode == 0, result.stderr[-2000:]
  rows = {}
  for line in result.stdout.splitlines():
    name, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
    rows[name] = value
  return rows


def test_the_plan_counts_the_models_parameters(shapes_plan):
  config = config_files.load_config(SHAPES)
  model = model_specs.build_model(config)
  variables = jax.eval_shape(
      lambda: model.init({"params": jax.random.PRNGKey(0), "slots": jax.random.PRNGKey(1)},
                         model_specs.example_batch(config)))
  expected = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert int(shapes_plan["parameters"].replace(",", "")) == expected
  # Adam: parameters plus two moments in float32, replicated on each device.
  replicated = _mib(shapes_plan["params + optimizer per device, replicated"])
  assert replicated == pytest.approx(3 * 4 * expected / 2**20, abs=0.01)
  assert _mib(shapes_plan["params + optimizer per device, fsdp=2"]) < replicated


def test_the_plan_reports_the_compiled_step_and_the_fit(shapes_plan):
  assert "batch 16 on 2 forced CPU devices" in shapes_plan["config"]
  temporary = _mib(shapes_plan["compiled step: temporary memory per device"])
  assert temporary > 0
  total = _mib(shapes_plan["total per device (state as configured + batch + temporary)"])
  assert total > temporary
  assert shapes_plan["fits"].startswith("yes")


def test_a_config_that_does_not_fit_is_reported():
  result = _plan(f"--config={SHAPES}", "--devices=1", "--hbm_gib=0.001")
  assert result.returncode == 0, result.stderr[-2000:]
  assert re.search(r"^fits\s+NO \(\d+% of 0.001 GiB\)$", result.stdout, re.M), result.stdout


def test_a_batch_the_devices_do_not_divide_is_one_line():
  result = _plan(f"--config={SHAPES}", "--devices=3")
  assert result.returncode == 2
  assert result.stderr.strip() == ("error: batch_size 16 is not divisible by 3 devices x "
                                   "grad_accum_steps 1; change one of them.")


def test_a_tpu_topology_without_libtpu_is_one_line():
  if importlib.util.find_spec("libtpu") is not None:
    pytest.skip("libtpu is installed here")
  result = _plan(f"--config={SHAPES}", "--tpu_topology=v4:2x2x1")
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: Cannot compile for TPU topology")
  assert 'pip install -e ".[tpu]"' in lines[0]


def test_neither_devices_nor_a_topology_is_one_line():
  result = _plan(f"--config={SHAPES}")
  assert result.returncode == 2
  assert result.stderr.strip() == ("error: Pass --devices=N (forced CPU devices) or "
                                   "--tpu_topology=GEN:SHAPE (e.g. v4:4x4x2).")
