"""The package's layering and the configs' load time, checked on the source itself."""

import ast
import glob
import os
import subprocess
import sys

import pytest

from tests.training_utils import REPO

PACKAGE = os.path.join(REPO, "invariant_slots")
# Bottom up; a module may import its own layer and the layers below it.
LAYERS = {"registry": 0, "config_files": 0, "modules": 1, "datasets": 1, "lib": 2,
          "pipelines": 3}
TOOLS = 4  # main, plan, predict, analyze, render, doctor, cli.
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
  assert float(seconds) < 0.5
