"""The package's layering and the configs' load time, checked on the source itself."""

import ast
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from invariant_slots.datasets import DATA_SOURCES, OPS
from invariant_slots.lib.losses import LOSSES
from invariant_slots.modules.correctors import CORRECTORS
from tests.training_utils import REPO, child_env, read_scalars, tiny_flags

PACKAGE = os.path.join(REPO, "invariant_slots")
# Bottom up; a module may import its own layer and the layers below it.
LAYERS = {"registry": 0, "config_files": 0, "modules": 1, "datasets": 1, "lib": 2,
          "pipelines": 3}
TOOLS = 4  # main, plan and the tools (predict, analyze, render, probe, oracle, ...), cli.
CONFIGS = sorted(path for path in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if os.path.basename(path) not in ("__init__.py", "common.py"))


def layer_of(module: str) -> int:
  """The layer of `invariant_slots.X...` (or of the file's package path `X/...`)."""
  top = module.split(".")[1] if module.startswith("invariant_slots.") else module
  return LAYERS.get(top, TOOLS)


def imported_modules(path: str) -> list[tuple[int, str]]:
  """`(line, module)` of every `invariant_slots` import in the file, at any depth."""
  found = []
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.append((node.lineno, node.module))
      # `from invariant_slots import pipelines` imports the package `pipelines`.
      if node.module == "invariant_slots":
        found += [(node.lineno, f"invariant_slots.{alias.name}") for alias in node.names]
  return [(line, name) for line, name in found
          if name.startswith("invariant_slots.")]


def upward_imports(root: str) -> list[str]:
  """`file:line imports module` for every import of a higher layer under `root`."""
  problems = []
  for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
    relative = os.path.relpath(path, root)
    own = layer_of(relative.split(os.sep)[0].removesuffix(".py"))
    for line, module in imported_modules(path):
      if layer_of(module) > own:
        problems.append(f"{relative}:{line} imports {module}")
  return problems


def test_no_module_imports_a_layer_above_its_own():
  assert upward_imports(PACKAGE) == []


def test_the_check_finds_an_upward_import(tmp_path):
  (tmp_path / "lib").mkdir()
  (tmp_path / "lib" / "helper.py").write_text(
      "import os\n\n\ndef f():\n  from invariant_slots.pipelines import images\n")
  (tmp_path / "modules").mkdir()
  (tmp_path / "modules" / "fine.py").write_text("from invariant_slots.registry import Registry\n")
  assert upward_imports(str(tmp_path)) == [
      "lib/helper.py:5 imports invariant_slots.pipelines"]


def test_configs_import_only_ml_collections():
  """Every config, and configs/common.py, imports nothing but ml_collections and configs."""
  for path in CONFIGS + [os.path.join(REPO, "configs", "common.py")]:
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module])
        for name in names:
          assert name.split(".")[0] in ("ml_collections", "configs"), (path, name)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_in_well_under_a_second(path, tmp_path):
  """In a fresh interpreter, from another working directory, without JAX or TF."""
  script = (
      "import sys, time\n"
      f"sys.path.insert(0, {REPO!r})\n"
      "start = time.perf_counter()\n"
      "from invariant_slots import config_files\n"
      f"config = config_files.load_config({path!r})\n"
      "print(time.perf_counter() - start)\n"
      "print(sorted(m for m in ('jax', 'flax', 'tensorflow') if m in sys.modules))\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=True)
  seconds, heavy = result.stdout.split("\n")[:2]
  assert heavy == "[]"
  assert float(seconds) < 1.0


def _python_blocks(markdown: str) -> list[str]:
  """The fenced ```python blocks of a markdown text, in order."""
  return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


@pytest.fixture(scope="module")
def worked_example(tmp_path_factory) -> str:
  """docs/architecture.md's two files, written to a fresh folder; the folder."""
  folder = tmp_path_factory.mktemp("worked_example")
  with open(os.path.join(REPO, "docs", "architecture.md")) as f:
    extensions, config = _python_blocks(f.read())
  (folder / "my_extensions.py").write_text(extensions)
  (folder / "my_experiment.py").write_text(config)
  return str(folder)


def test_the_worked_example_trains_with_its_own_corrector_op_loss_and_source(
    worked_example, shapes_data_dir, tmp_path):
  workdir = tmp_path / "run"
  flags = [f"--config={os.path.join(worked_example, 'my_experiment.py')}",
           f"--workdir={workdir}"] + tiny_flags(shapes_data_dir, num_train_steps=2)[1:]
  env = child_env()
  env["PYTHONPATH"] = os.pathsep.join([worked_example, env["PYTHONPATH"]])
  result = subprocess.run([sys.executable, "-m", "invariant_slots.main", *flags], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["model"]["corrector"]["name"] == "SoftKMeans"
  assert saved["data"]["source"] == "shapes_mirrored"
  assert saved["losses"]["reconstruction"]["type"] == "charbonnier"
  losses = read_scalars(str(workdir), "train/loss")
  assert sorted(losses) == [1, 2] and all(np.isfinite(list(losses.values())))


def test_the_worked_example_parts_behave(worked_example, monkeypatch):
  """The example's op, loss and corrector against numpy."""
  # Registered into copies of the registries, so that other tests see the package's only.
  for registry in (CORRECTORS, OPS, LOSSES, DATA_SOURCES):
    monkeypatch.setattr(registry, "_entries", dict(registry._entries))  # pylint: disable=protected-access
  monkeypatch.syspath_prepend(worked_example)
  monkeypatch.delitem(sys.modules, "my_extensions", raising=False)
  import my_extensions  # pylint: disable=g-import-not-at-top,import-error
  image = np.random.default_rng(0).uniform(size=(4, 5, 3)).astype(np.float32)
  gray = my_extensions.grayscale()({"image": tf.constant(image)})["image"].numpy()
  np.testing.assert_allclose(gray, np.repeat(image.mean(-1, keepdims=True), 3, -1), rtol=1e-6)
  prediction, target = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
  np.testing.assert_allclose(my_extensions.charbonnier(prediction, target),
                             np.sqrt(1 + 1e-6) * np.ones(2), rtol=1e-6)
  corrector = my_extensions.SoftKMeans(slot_size=4, num_iterations=2)
  slots = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4))
  inputs = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 5))
  params = corrector.init(jax.random.PRNGKey(2), slots, inputs)
  out, attention = corrector.apply(params, slots, inputs)
  assert out.shape == (2, 3, 4) and attention.shape == (2, 2, 3, 6)
  np.testing.assert_allclose(attention.sum(axis=2), 1.0, rtol=1e-5)
  # Permuting the slots permutes the refined slots (slot equivariance).
  order = jnp.array([2, 0, 1])
  permuted, _ = corrector.apply(params, slots[:, order], inputs)
  np.testing.assert_allclose(permuted, out[:, order], rtol=1e-5, atol=1e-6)


def test_a_config_import_that_fails_is_one_line(tmp_path):
  config = tmp_path / "bad.py"
  config.write_text("from configs import shapes\n\n\ndef get_config():\n"
                    "  config = shapes.get_config()\n  config.imports = ('no_such_module',)\n"
                    "  return config\n")
  result = subprocess.run([sys.executable, "-m", "invariant_slots.main", f"--config={config}",
                           f"--workdir={tmp_path / 'w'}"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: config.imports names 'no_such_module', which cannot be imported (No module named "
      "'no_such_module'); put its folder on PYTHONPATH or run from the folder above it."]


def test_the_readme_tables_are_generated_from_the_code():
  spec = importlib.util.spec_from_file_location(
      "readme_tables", os.path.join(REPO, "docs", "readme_tables.py"))
  tables = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tables)
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  assert tables.with_tables(readme) == readme, "run python docs/readme_tables.py --write"
  assert len(readme.splitlines()) < 200
  for name in tables.CORRECTORS.names:
    assert f"| `{name}` |" in readme


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_states_the_metrics_to_expect(path):
  docstring = ast.get_docstring(ast.parse(open(path).read()))
  expect = [p for p in docstring.split("\n\n") if p.startswith("Expect")]
  assert len(expect) == 1 and re.search(r"\d", expect[0]), docstring
