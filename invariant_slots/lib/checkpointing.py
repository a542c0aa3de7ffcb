"""Checkpoints: model and optimizer state with orbax, data position with tf.train.

The train state goes to `workdir/checkpoints/<step>` through an orbax
`CheckpointManager` (atomic writes, last `k` kept, multi-host aware). Each
process also saves its tf.data iterator to `workdir/data_state/<n>_processes/process_<i>`,
so a resumed run sees exactly the batches an uninterrupted run would. A run
with another number of processes restores the state but restarts the data.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import logging


class Checkpointer:
  """Saves and restores `(train_state, data_iterator)` pairs by step."""

  def __init__(self, workdir: str, max_to_keep: int):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
    # Data positions are only meaningful for the same process layout.
    self._data_dir = os.path.join(workdir, "data_state",
                                  f"{jax.process_count()}_processes",
                                  f"process_{jax.process_index()}")

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
    if iterator is not None:
      self._prune_data_checkpoints()

  def _prune_data_checkpoints(self) -> None:
    """Deletes data positions whose state checkpoint orbax has removed."""
    keep = set(self.manager.all_steps())
    for name in tf.io.gfile.listdir(self._data_dir):
      step = name.split(".")[0].removeprefix("ckpt-")
      if step.isdigit() and int(step) not in keep:
        tf.io.gfile.remove(os.path.join(self._data_dir, name))

  def restore(self, step: int, abstract_state: Any, iterator=None) -> Any:
    """Restores the state (with the shardings of `abstract_state`) and data position."""
    state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    if iterator is not None:
      prefix = os.path.join(self._data_dir, f"ckpt-{step}")
      if tf.io.gfile.glob(prefix + ".index"):
        self._data_checkpoint(iterator).read(prefix).assert_consumed()
      else:
        logging.warning("No data position saved for step %d with %d processes; the input "
                        "pipeline restarts.", step, jax.process_count())
    return state

  def close(self) -> None:
    self.manager.close()
