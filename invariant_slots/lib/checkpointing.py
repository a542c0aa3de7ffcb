"""Checkpoints: model and optimizer state with orbax, data position with tf.train.

The train state goes to `workdir/checkpoints/<step>` through an orbax
`CheckpointManager` (atomic writes, multi-host aware). Each process also saves
its tf.data iterator to `workdir/data_state/<n>_processes/process_<i>`, so a
resumed run sees exactly the batches an uninterrupted run would. A run with
another number of processes restores the state but restarts the data.

A run deletes only checkpoints it wrote itself, keeping its newest
`max_to_keep`. Restoring falls back from a checkpoint that cannot be read to
the next older one, with a warning, and (when writing) moves the unreadable
one to `workdir/checkpoints_unreadable/<step>`.
"""

import logging as pylogging
import os
import shutil
import sys
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import logging
from jax.experimental import multihost_utils

from invariant_slots.lib import model_specs
from invariant_slots.lib import training
from invariant_slots.registry import ConfigError


def _key_name(key: Any) -> str:
  """One part of a tree path (dict key, attribute or index) as a string."""
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """`{"params/encoder/kernel": shape}` for every array leaf of `tree`."""
  return {"/".join(map(_key_name, path)): tuple(getattr(leaf, "shape", ()))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shape_mismatch(saved: Any, target: Any) -> str | None:
  """The first array (parameters first) whose shape differs between two trees, described."""
  saved, target = leaf_shapes(saved), leaf_shapes(target)
  for key in sorted(saved.keys() | target.keys(), key=lambda k: (not k.startswith("params"), k)):
    if saved.get(key) != target.get(key):
      old, new = (str(shapes.get(key, "absent")) for shapes in (saved, target))
      return f"{key} is {old} in the checkpoint, {new} now"
  return None


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:200] if text else ''}"


# What a failed orbax read leaves behind once its error has been raised: the
# other shards' reads fail the same way, and tensorstore's late callbacks find
# orbax's event loop closed.
_FAILED_READ = "Encountered error while reading array index"
_CLOSED_LOOP = "Event loop is closed"


def _is_failed_read_echo(error: BaseException | None) -> bool:
  while error is not None:
    if _FAILED_READ in str(error) or (isinstance(error, RuntimeError) and
                                       str(error) == _CLOSED_LOOP):
      return True
    error = error.__cause__ or error.__context__
  return False


def _drop_failed_read_records(record: pylogging.LogRecord) -> bool:
  """Logging filter: False for a record carrying an echo of a failed read."""
  return not (record.exc_info and _is_failed_read_echo(record.exc_info[1]))


def silence_failed_read_echoes() -> None:
  """Keeps the echoes of a failed checkpoint read out of the log (idempotent).

  The error itself is reported in one line (`restore`, `restore_latest`); its
  echoes would add tracebacks per array shard, some after orbax has returned.
  """
  for name in ("asyncio", "absl", ""):
    logger = pylogging.getLogger(name)
    if _drop_failed_read_records not in logger.filters:
      logger.addFilter(_drop_failed_read_records)
  previous_hook = sys.unraisablehook
  if getattr(previous_hook, "drops_failed_read_echoes", False):
    return

  def hook(unraisable) -> None:
    if not _is_failed_read_echo(unraisable.exc_value):
      previous_hook(unraisable)

  hook.drops_failed_read_echoes = True
  sys.unraisablehook = hook


class Checkpointer:
  """Saves and restores `(train_state, data_iterator)` pairs by step.

  With `read_only` (predict, analyze, render) nothing in the workdir is
  created, changed or removed.
  """

  def __init__(self, workdir: str, max_to_keep: int = 1, read_only: bool = False):
    if max_to_keep < 1:
      raise ConfigError(f"checkpoints_to_keep must be >= 1, got {max_to_keep}.")
    self._workdir = workdir
    self._directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    if read_only and not os.path.isdir(self._directory):
      raise ConfigError(f"No checkpoint in {workdir}; train first or pass another --workdir.")
    self._read_only = read_only
    self._max_to_keep = max_to_keep
    self._written: list[int] = []  # Steps this object saved, oldest first.
    # Data positions are only meaningful for the same process layout.
    self._data_dir = os.path.join(workdir, "data_state",
                                  f"{jax.process_count()}_processes",
                                  f"process_{jax.process_index()}")
    if not read_only:
      self._remove_unfinished_writes()
    self.manager = ocp.CheckpointManager(
        self._directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=None, create=not read_only,
                                             read_only=read_only))

  def _remove_unfinished_writes(self) -> None:
    """Deletes what a killed run left half-written (the caller holds the workdir lock)."""
    patterns = [os.path.join(self._data_dir, "ckpt-*_temp*")]
    if jax.process_index() == 0:
      patterns.append(os.path.join(self._directory, "*.orbax-checkpoint-tmp*"))
    for path in (p for pattern in patterns for p in tf.io.gfile.glob(pattern)):
      logging.warning("Removing %s, left by an interrupted checkpoint write.", path)
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _data_checkpoint(self, iterator) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(iterator=iterator)

  def save(self, step: int, state: Any, iterator=None) -> None:
    """Writes the data position first, then the (atomic) state checkpoint."""
    if iterator is not None:
      self._data_checkpoint(iterator).write(os.path.join(self._data_dir, f"ckpt-{step}"))
    self.manager.save(step, args=ocp.args.StandardSave(state))
    self.manager.wait_until_finished()
    self._written.append(step)
    self._prune()

  def _prune(self) -> None:
    """Deletes this run's checkpoints that are not among the newest `max_to_keep`."""
    newest = set(sorted(self.manager.all_steps())[-self._max_to_keep:])
    for step in [s for s in self._written if s not in newest]:
      self.manager.delete(step)
      self._written.remove(step)
      for path in tf.io.gfile.glob(os.path.join(self._data_dir, f"ckpt-{step}.*")):
        tf.io.gfile.remove(path)

  def restore(self, step: int, abstract_state: Any, iterator=None) -> Any:
    """Restores step `step` (with the shardings of `abstract_state`) and its data position.

    Raises:
      ConfigError: the checkpoint holds arrays of other shapes than `abstract_state`
        (another model or optimizer), or cannot be read.
    """
    try:
      return self._restore(step, abstract_state, iterator)
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f"Cannot restore the checkpoint at step {step} in {self._directory} "
                        f"({_first_line(e)}).") from None

  def _restore(self, step: int, abstract_state: Any, iterator) -> Any:
    silence_failed_read_echoes()
    metadata = self.manager.item_metadata(step)
    if metadata is None:
      raise FileNotFoundError(f"no metadata in {self._directory}/{step}")
    mismatch = shape_mismatch(metadata, abstract_state)
    if mismatch:
      raise ConfigError(f"The checkpoint at step {step} in {self._directory} does not fit "
                        f"this config: {mismatch}.")
    state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    if iterator is not None:
      prefix = os.path.join(self._data_dir, f"ckpt-{step}")
      if tf.io.gfile.glob(prefix + ".index"):
        self._data_checkpoint(iterator).read(prefix).assert_consumed()
      else:
        logging.warning("No data position saved for step %d with %d processes; the input "
                        "pipeline restarts.", step, jax.process_count())
    return state

  def restore_latest(self, abstract_state: Any, iterator=None) -> tuple[int | None, Any]:
    """Restores the newest checkpoint that restores cleanly; `(None, None)` if there is none.

    A checkpoint that cannot be read (a damaged or missing file, a damaged data
    position) is skipped with a one-line warning naming its step.

    Raises:
      ConfigError: a readable checkpoint holds arrays of other shapes than
        `abstract_state`, or no checkpoint can be read.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        return step, self._restore(step, abstract_state, iterator)
      except ConfigError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("Skipping the checkpoint at step %d in %s, which cannot be restored "
                        "(%s); trying the previous one.", step, self._directory, _first_line(e))
        self._set_aside(step)
    if steps:
      raise ConfigError(f"None of the checkpoints in {self._directory} (steps "
                        f"{', '.join(map(str, sorted(steps)))}) can be restored; see the "
                        "warnings above.")
    return None, None

  def _set_aside(self, step: int) -> None:
    """Moves an unreadable checkpoint out of the way, so that its step can be saved again."""
    if self._read_only:
      return
    if jax.process_index() == 0:
      target = os.path.join(self._workdir, "checkpoints_unreadable", str(step))
      while os.path.exists(target):
        target += "_"
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self._directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
    self.manager.reload()

  def close(self) -> None:
    self.manager.close()


def load_params(workdir: str, config: ml_collections.ConfigDict,
                step: int | None = None) -> tuple[int, Any]:
  """`(step, params)` of `workdir`'s checkpoint at `step` (default: the newest readable).

  For inference: the state is restored onto the first device without
  touching the workdir, and only the parameters are returned.

  Raises:
    ConfigError: no checkpoint, or one that does not fit `config`.
  """
  model = model_specs.build_model(config)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract_state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      jax.eval_shape(lambda: training.init_state(
          model, training.make_optimizer(config), model_specs.example_batch(config), config)))
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    if step is None:
      step, state = checkpointer.restore_latest(abstract_state)
    else:
      state = checkpointer.restore(step, abstract_state)
  finally:
    checkpointer.close()
  if step is None:
    raise ConfigError(f"No checkpoint in {workdir}; train first or pass another --workdir.")
  return step, state.params
