"""Trains and evaluates a model: `python -m invariant_slots.main --config=... --workdir=...`.

Any config key can be overridden on the command line, e.g.
`--config.model.corrector.name=TF-Inv --config.num_train_steps=1000`.
"""

import contextlib
import logging as pylogging
import os

from absl import app
from absl import flags
from absl import logging

from invariant_slots import cli
from invariant_slots.lib import validation
from invariant_slots.lib import workdir_lock
from invariant_slots.registry import ConfigError

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for multi-process runs; with --num_processes and --process_id.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() with its auto-detection (Cloud TPU pods, SLURM) "
    "even without --coordinator_address.")


def _quiet_library_logs(record) -> bool:
  """Keeps orbax's per-save INFO chatter out of the training log."""
  return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def _initialize_distributed() -> None:
  """Joins a multi-process job when asked to; single-process runs skip this."""
  import jax  # pylint: disable=g-import-not-at-top
  explicit = _COORDINATOR.value is not None
  if not (explicit or _DISTRIBUTED.value):
    return
  # Cross-process collectives between CPU devices go through gloo (no effect on GPU/TPU).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  else:
    jax.distributed.initialize()
  logging.info("Process %d of %d; %d local of %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def cpu_device_count(requested: int, batch_size: int, cores: int) -> int:
  """CPU devices for `config.cpu_devices` (0: one per core, at most a divisor of the batch)."""
  if requested == 0:
    requested = max(1, cores)
  if batch_size % requested:
    requested = max(d for d in range(1, requested + 1) if batch_size % d == 0)
  return requested


def _split_cpu(config) -> None:
  """Splits a CPU-only host into `config.cpu_devices` devices (before JAX starts).

  Left alone: multi-process jobs and an explicit
  `--xla_force_host_platform_device_count` in `XLA_FLAGS`.
  """
  multi_process = _COORDINATOR.value is not None or _DISTRIBUTED.value
  if multi_process or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return
  count = cpu_device_count(config.get("cpu_devices", 1), config.batch_size, os.cpu_count() or 1)
  if count > 1:
    import jax  # pylint: disable=g-import-not-at-top
    try:
      jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX already started in this process (called from Python).
      logging.warning("cpu_devices=%d not applied: JAX's devices already exist.", count)
      return
    logging.info("CPU host split into %d devices (config.cpu_devices).", count)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  config, workdir = cli.CONFIG.value, cli.WORKDIR.value
  # Process 0 of a multi-process job is known before start-up unless detected
  # automatically; then the trainer takes the lock once the process index is known.
  first_process = not _DISTRIBUTED.value and (_PROCESS_ID.value or 0) == 0
  try:
    # Checked before the slow start-up: answers within a second.
    validation.check_run(config, workdir)
    _split_cpu(config)
    with workdir_lock.hold(workdir) if first_process else contextlib.nullcontext():
      # Imported here so that TF's and JAX's start-up happens after the checks.
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.set_visible_devices([], "GPU")  # Keep accelerators for JAX.
      from invariant_slots import pipelines  # pylint: disable=g-import-not-at-top
      from invariant_slots.lib import trainer  # pylint: disable=g-import-not-at-top

      pylogging.getLogger("absl").addFilter(_quiet_library_logs)
      _initialize_distributed()
      logging.info("Config:\n%s", config)
      trainer.train_and_evaluate(config, workdir, pipelines.get_pipeline(config))
  except (ConfigError, FileNotFoundError, FloatingPointError) as e:
    cli.fail(str(e))
  except KeyboardInterrupt as e:
    cli.fail(str(e) or "Interrupted during start-up; the checkpoints are unchanged.", 130)


if __name__ == "__main__":
  cli.use_flags("config", "workdir")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=cli.parse_flags)
