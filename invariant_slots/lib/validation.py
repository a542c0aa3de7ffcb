"""Checks of a config and a workdir that run before any heavy start-up.

Everything here imports only the standard library and `ml_collections`, so
`invariant_slots.main` answers a bad value, an unknown key or an unusable
workdir within a second, before TensorFlow and JAX load. The trainer runs the
same checks for library callers.
"""

import dataclasses
import difflib
import fnmatch
import json
import os
import re
from typing import Any, Sequence

import ml_collections

from invariant_slots.registry import ConfigError

# (dotted-key pattern, comparison, bound): every key of the config that
# matches a pattern must satisfy it; keys a config lacks are skipped, so new
# model options need no entry unless they have a range.
RANGES: tuple[tuple[str, str, float], ...] = (
    ("learning_rate", ">", 0),
    ("num_train_steps", ">=", 0),
    ("batch_size", ">=", 1),
    ("grad_accum_steps", ">=", 1),
    ("cpu_devices", ">=", 0),
    ("warmup_steps", ">=", 0),
    ("lr_decay_steps", ">=", 1),
    ("lr_decay_rate", ">", 0),
    ("max_grad_norm", ">=", 0),
    ("freeze.until_step", ">=", 0),
    ("log_loss_every_steps", ">=", 1),
    ("eval_every_steps", ">=", 1),
    ("checkpoint_every_steps", ">=", 1),
    ("checkpoints_to_keep", ">=", 1),
    ("num_eval_images", ">=", 0),
    ("mesh.fsdp", ">=", 1),
    ("mesh.fsdp_min_size", ">=", 0),
    ("data.shuffle_buffer_size", ">=", 1),
    ("data.num_shards", ">=", 0),
    ("data.num_eval_examples", ">=", 1),
    ("model.num_slots", ">=", 1),
    ("model*.slot_size", ">=", 1),
    ("model*.num_iterations", ">=", 1),
    ("model*.num_heads", ">=", 1),
    ("model*.qkv_size", ">=", 1),
    ("model*.kernel_size", ">=", 1),
)
CHOICES: dict[str, tuple[str, ...]] = {
    "lr_schedule": ("cosine", "exponential", "constant"),
    "dtype": ("float32", "bfloat16", "float16"),
}
# Keys that decide which examples form each batch: when one changes on
# resume, the checkpoint still restores but the data position cannot.
DATA_ORDER_KEYS = ("batch_size", "seed", "data.*")
_COMPARE = {">": lambda v, b: v > b, ">=": lambda v, b: v >= b}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` (dicts or ConfigDicts) -> `{"a.b": 1}`; empty dicts are leaves."""
  if hasattr(tree, "to_dict"):
    tree = tree.to_dict()
  if not isinstance(tree, dict) or not tree:
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
  return flat


def check_values(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` naming every key outside its range or choices."""
  problems = []
  for key, value in flatten(config).items():
    if key in CHOICES and value not in CHOICES[key]:
      problems.append(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    for pattern, comparison, bound in RANGES:
      if not fnmatch.fnmatchcase(key, pattern):
        continue
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{key} must be a number, got {value!r}")
      elif not _COMPARE[comparison](value, bound):
        problems.append(f"{key} must be {comparison} {bound}, got {value}")
  accum = config.get("grad_accum_steps", 1)
  if not problems and config.get("batch_size") and accum > 1 and config.batch_size % accum:
    problems.append(f"batch_size {config.batch_size} is not divisible by grad_accum_steps "
                    f"{accum}; pick a divisor of it")
  freeze_pattern = (config.get("freeze") or {}).get("params")
  if isinstance(freeze_pattern, str):
    try:
      re.compile(freeze_pattern)
    except re.error as error:
      problems.append(f"freeze.params {freeze_pattern!r} is not a regular expression ({error})")
  if problems:
    raise ConfigError("Invalid config: " + "; ".join(problems) + ".")


def closest_key(key: str, config: ml_collections.ConfigDict) -> str:
  """The valid dotted key of `config` that looks most like `key`."""
  keys = list(flatten(config))
  keys += sorted({k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)})
  return max(keys, key=lambda k: difflib.SequenceMatcher(None, key, k).ratio())


def check_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Raises `ConfigError` for the first dotted override that `config` lacks."""
  known = flatten(config)
  for key in overrides:
    if key not in known and not any(k.startswith(key + ".") for k in known):
      raise ConfigError(f"Unknown config key {key!r}; did you mean "
                        f"{closest_key(key, config)!r}?")


def override_keys(argv: Sequence[str], flag: str = "config") -> list[str]:
  """The dotted keys of the `--config.KEY=VALUE` arguments in `argv`."""
  pattern = re.compile(rf"^--?(?:no)?{flag}\.([^=]+)")
  return [m.group(1) for m in map(pattern.match, argv) if m]


def check_workdir(workdir: str) -> None:
  """Creates `workdir` if needed; raises `ConfigError` if it is unusable."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir {workdir} is a file, not a directory; pass a directory.")
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir {workdir} is not writable ({e.strerror}); pass a "
                      "directory you can write to.") from None


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the committed checkpoints in `workdir/checkpoints`, ascending."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def check_steps(config: ml_collections.ConfigDict, latest: int | None, workdir: str) -> None:
  """Refuses `num_train_steps` that cannot mean anything for the checkpoint at `latest`."""
  steps = config.num_train_steps
  if steps == 0 and latest is None:
    raise ConfigError(f"num_train_steps=0 evaluates the latest checkpoint, but {workdir} has "
                      "none; train first with num_train_steps > 0.")
  if latest is not None and 0 < steps < latest:
    raise ConfigError(f"num_train_steps={steps} is below step {latest} of the latest "
                      f"checkpoint in {workdir}; raise num_train_steps to train on, or pass "
                      "--config.num_train_steps=0 to evaluate that checkpoint.")


@dataclasses.dataclass(frozen=True)
class ConfigChange:
  """One key whose value differs between the saved and the new config."""

  key: str
  old: Any
  new: Any

  def __str__(self) -> str:
    return f"{self.key} {self.old!r} -> {self.new!r}"


def saved_config(workdir: str) -> dict[str, Any] | None:
  """The flattened `workdir/config.json`, or None if there is none.

  Raises:
    ConfigError: the file is not valid JSON.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return flatten(json.load(f))
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} is damaged ({e}); restore it from a copy, or delete it to "
                      "resume without comparing configs.") from None


def config_changes(config: ml_collections.ConfigDict, workdir: str) -> list[ConfigChange]:
  """The keys whose values differ from those saved in `workdir/config.json`."""
  saved = saved_config(workdir)
  if saved is None:
    return []
  new = flatten(json.loads(config.to_json()))
  return [ConfigChange(key, saved.get(key), new.get(key))
          for key in sorted(set(saved) | set(new)) if saved.get(key) != new.get(key)]


def changes_data_order(changes: Sequence[ConfigChange]) -> bool:
  """Whether any change alters which examples form each batch."""
  return any(fnmatch.fnmatchcase(change.key, pattern)
             for change in changes for pattern in DATA_ORDER_KEYS)


def check_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """All checks that need no TensorFlow or JAX: values, workdir, steps, saved config."""
  check_values(config)
  check_workdir(workdir)
  steps = checkpoint_steps(workdir)
  check_steps(config, steps[-1] if steps else None, workdir)
  if steps:
    config_changes(config, workdir)  # A damaged config.json is reported here.
