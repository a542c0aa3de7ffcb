"""Loading experiment config files (`configs/*.py`) and applying overrides."""

import importlib.util
import os
import sys

import ml_collections


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


def load_config(path: str, **overrides) -> ml_collections.ConfigDict:
  """Loads `get_config()` from a config file and applies dotted-key overrides.

  `load_config("configs/shapes.py", **{"model.corrector.name": "TF"})`.
  """
  make_importable(path)
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return apply_overrides(module.get_config(), **overrides)


def apply_overrides(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """Sets dotted keys in place (`**{"data.batch_size": 8}`) and returns `config`."""
  for key, value in overrides.items():
    node = config
    *parents, last = key.split(".")
    for part in parents:
      node = node[part]
    node[last] = value
  return config
