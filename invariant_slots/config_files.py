"""Loading experiment config files (`configs/*.py`) and applying overrides."""

import importlib
import importlib.util
import os
import sys

import ml_collections

from invariant_slots.registry import ConfigError


def make_importable(path: str) -> None:
  """Lets the config file at `path` run `from configs import common`.

  When the file's folder is a config package (it holds `common.py`), the
  folder above it goes on `sys.path`, so configs load from any working directory.
  """
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isfile(os.path.join(folder, "common.py")):
    root = os.path.dirname(folder)
    if root not in sys.path:
      sys.path.insert(0, root)


def import_modules(config: ml_collections.ConfigDict) -> None:
  """Imports the modules that `config.imports` names, so their parts register.

  A corrector, op, loss or data source of one's own is one file with a
  registration; naming it in `config.imports` makes it available to the config
  (docs/architecture.md).
  """
  for name in config.get("imports", ()):
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise ConfigError(f"config.imports names {name!r}, which cannot be imported ({e}); "
                        "put its folder on PYTHONPATH or run from the folder above it.") from None


def load_config(path: str, **overrides) -> ml_collections.ConfigDict:
  """Loads `get_config()` from a config file, applies dotted-key overrides and imports
  the modules of `config.imports`.

  `load_config("configs/shapes.py", **{"model.corrector.name": "TF"})`. As with
  `--config`, text after a colon (`configs/shapes_multiview.py:single_view`) is
  passed to `get_config`.
  """
  path, _, argument = path.partition(":")
  make_importable(path)
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = apply_overrides(module.get_config(argument) if argument else module.get_config(),
                           **overrides)
  import_modules(config)
  return config


def apply_overrides(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """Sets dotted keys in place (`**{"data.batch_size": 8}`) and returns `config`."""
  for key, value in overrides.items():
    node = config
    *parents, last = key.split(".")
    for part in parents:
      node = node[part]
    node[last] = value
  return config
