"""Command-line handling shared by the tools: flags and config errors as one line."""

import os
import sys

from absl import flags

from invariant_slots import config_files
from invariant_slots.lib import validation
from invariant_slots.registry import ConfigError


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
    validation.check_overrides(config_files.load_config(path.split(":", 1)[0]),
                               validation.override_keys(argv))
  except ConfigError as e:
    return str(e)
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
    fail(str(e))
  except (OSError, AttributeError, KeyError) as e:
    fail(describe_config_error(argv, e))
  config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
  if config is not None:
    try:
      config_files.import_modules(config)
    except ConfigError as e:
      fail(str(e))
  return remaining
