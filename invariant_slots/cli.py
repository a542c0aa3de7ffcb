"""Command-line handling shared by the commands: their common flags, the config
they run, and bad flags, config files or config keys as one line.

`main` and `plan` take `--config`; the tools on trained runs (`predict`,
`analyze`, `render`, `probe`) take `--workdir` and read the run's saved
`WORKDIR/config.json` unless `--config` (with its `--config.KEY=VALUE`
overrides) replaces it, `--step` (default: the newest readable checkpoint) and
`--output_dir`. Each command declares the ones it uses as its key flags.
"""

import json
import os
import sys
from typing import Any, NamedTuple

import ml_collections
from absl import flags
from ml_collections import config_flags

from invariant_slots import config_files
from invariant_slots.lib import validation
from invariant_slots.registry import ConfigError


CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py), overridden by --config.KEY=VALUE; "
    "the tools on trained runs default to the run's WORKDIR/config.json.", lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None,
                              "Run directory: checkpoints, TensorBoard events, config.json.")
STEP = flags.DEFINE_integer("step", None, "Checkpoint step to load; default: the newest "
                            "readable one.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for the outputs.")


def use_flags(*names: str) -> None:
  """Declares the shared flags a command uses as its key flags (shown by --help)."""
  for name in names:
    flags.declare_key_flag(name)


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in `workdir/config.json`."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"No config.json in {workdir}; pass the --workdir of a training run.")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except ValueError as e:
    raise ConfigError(f"{path} is damaged ({e}); restore it from a copy of the run.") from None


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """`--config` when given, else the run's saved config; its `config.imports` imported."""
  config = CONFIG.value if CONFIG.value is not None else saved_config(workdir)
  config_files.import_modules(config)
  return config


class MultiviewRun(NamedTuple):
  """A trained multi-view run: its config, model, checkpoint and unprocessed eval split."""

  config: ml_collections.ConfigDict
  model: Any
  step: int
  params: Any
  eval_data: Any  # tf.data.Dataset of stored scenes.
  eval_size: int


def load_multiview_run(tool: str, source: str | None = None) -> MultiviewRun:
  """The multi-view run of `--workdir` (checkpoint `--step`) for the command `tool`.

  Raises:
    ConfigError: not a multiview run, not on data `source` (when given), or no
      checkpoint that fits.
  """
  from invariant_slots import datasets  # pylint: disable=g-import-not-at-top
  from invariant_slots.lib import checkpointing  # pylint: disable=g-import-not-at-top
  from invariant_slots.lib import model_specs  # pylint: disable=g-import-not-at-top

  config = run_config(WORKDIR.value)
  if config.get("pipeline") != "multiview":
    raise ConfigError(f"{tool} needs a multiview run, got pipeline {config.get('pipeline')!r}.")
  if source is not None and config.data.source != source:
    raise ConfigError(f"{tool} needs a run on data.source {source!r}, got "
                      f"{config.data.source!r}.")
  model = model_specs.build_model(config)
  step, params = checkpointing.load_params(WORKDIR.value, config, STEP.value)
  eval_data, eval_size = datasets.DATA_SOURCES.get(config.data.source)(config.data, False, 1, 0)
  return MultiviewRun(config, model, step, params, eval_data, eval_size)


def fail(message: str, status: int = 2) -> None:
  """Prints `error: message` on stderr and exits with `status`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def config_path(argv: list[str]) -> str | None:
  """The value of the last `--config` in `argv` (`--config=PATH` or `--config PATH`)."""
  path = None
  for i, arg in enumerate(argv):
    if arg.startswith(("--config=", "-config=")):
      path = arg.split("=", 1)[1]
    elif arg in ("--config", "-config") and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def describe_config_error(argv: list[str], error: Exception) -> str:
  """One line for a config file that does not load or an override it lacks."""
  path = config_path(argv)
  if path is None:
    return f"Bad --config ({error})."
  try:
    validation.check_overrides(config_files.load_config(path), validation.override_keys(argv))
  except ConfigError as e:
    return str(e)
  except Exception as e:  # pylint: disable=broad-except
    error = e  # The config file itself fails; name its own error.
  return f"Bad --config {path}: {type(error).__name__}: {str(error).strip().splitlines()[-1]}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag, config file or config key as one line."""
  path = config_path(argv)
  if path is not None and not os.path.isfile(path.split(":", 1)[0]):
    fail(f"Config file {path} does not exist; pass one of configs/*.py.")
  if path is not None:
    config_files.make_importable(path.split(":", 1)[0])
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    fail(describe_config_error(argv, e) if "parsing config file" in str(e) else str(e))
  except (OSError, AttributeError, KeyError) as e:
    fail(describe_config_error(argv, e))
  config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
  if config is not None:
    try:
      config_files.import_modules(config)
    except ConfigError as e:
      fail(str(e))
  return remaining
