"""The compute path runs where TensorFlow, TFDS and CLU are not installed."""

import os
import subprocess
import sys

import pytest

from tests.training_utils import REPO, child_env

# Imported by Python at start-up from PYTHONPATH: makes the three packages unimportable.
BLOCKER = """
import importlib.abc
import sys

class _Blocked(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "clu"):
      raise ImportError(f"{name} is blocked for this test")
    return None

sys.meta_path.insert(0, _Blocked())
"""

MODULES = ["invariant_slots.modules." + name[:-3]
           for name in sorted(os.listdir(os.path.join(REPO, "invariant_slots", "modules")))
           if name.endswith(".py") and name != "__init__.py"]


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory):
  site = tmp_path_factory.mktemp("blocked")
  (site / "sitecustomize.py").write_text(BLOCKER)
  env = child_env(2)
  env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
  return env


def _run(args, env):
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def test_the_blocker_blocks(blocked_env):
  result = _run(["-c", "import clu.metrics"], blocked_env)
  assert result.returncode != 0 and "blocked for this test" in result.stderr


def test_modules_train_step_and_model_specs_import_without_tensorflow(blocked_env):
  names = MODULES + ["invariant_slots.lib.training", "invariant_slots.lib.model_specs",
                     "invariant_slots.plan"]
  code = "import importlib, sys\n" + "\n".join(f"importlib.import_module({n!r})" for n in names)
  code += "\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu')))"
  result = _run(["-c", code], blocked_env)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]"


def test_the_accelerator_benchmark_runs_without_tensorflow(blocked_env):
  result = _run(["benchmarks/accelerator.py", "--configs=shapes_multiview",
                 "--dtypes=bfloat16", "--steps=1", "--max_batch=2"], blocked_env)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = [line for line in result.stdout.splitlines() if line.startswith("| shapes")]
  assert len(rows) == 1, result.stdout
  assert not any("failed" in row for row in rows), result.stdout
  assert all(float(row.split("|")[5]) > 0 for row in rows)  # steps/s


def test_the_memory_plan_runs_without_tensorflow(blocked_env):
  result = _run(["-m", "invariant_slots.plan", "--config=configs/shapes_video.py",
                 "--devices=2"], blocked_env)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "compiled step: temporary memory per device" in result.stdout
