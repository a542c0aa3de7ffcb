"""The training loop shared by all pipelines: one jitted step over a device mesh."""

import contextlib
import functools
import os
import signal
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
from jax.sharding import NamedSharding, PartitionSpec

from invariant_slots.lib import checkpointing
from invariant_slots.lib import evaluator
from invariant_slots.lib import input_pipeline
from invariant_slots.lib import metrics
from invariant_slots.lib import protocol
from invariant_slots.lib import training
from invariant_slots.lib import validation
from invariant_slots.lib import workdir_lock
from invariant_slots.registry import ConfigError

Array = jax.Array
# Train steps the host may dispatch ahead of the devices: enough to overlap the
# next batch's preparation with the running step, without an unbounded queue.
_STEPS_IN_FLIGHT = 2


class _Preemption:
  """Turns SIGTERM and a first SIGINT (Ctrl-C) into a flag the loop checks after
  each step; a second SIGINT exits at once (status 130), without checkpointing."""

  def __init__(self):
    self.signal: int | None = None
    self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signal is not None:
      print("error: Interrupted again; exiting at once. The last checkpoint is kept.",
            file=sys.stderr, flush=True)
      os._exit(130)  # pylint: disable=protected-access
    logging.warning("%s received: checkpointing after the current step%s.",
                    signal.Signals(signum).name,
                    "; press Ctrl-C again to exit at once" if signum == signal.SIGINT else "")
    self.signal = signum

  def restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       pipeline: protocol.Pipeline) -> dict[str, float]:
  """Trains `config` with `pipeline` in `workdir`, resuming from its latest readable checkpoint.

  Process 0 holds the workdir's lock throughout.

  Returns:
    The scalars of the last evaluation.

  Raises:
    ConfigError: a bad config or workdir, a checkpoint that does not fit the
      config, or unreadable data.
    FloatingPointError: the training diverged; the last good checkpoint is kept.
    KeyboardInterrupt: after checkpointing on a SIGINT (Ctrl-C).
  """
  validation.check_run(config, workdir)
  lock = workdir_lock.hold(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    return _train_and_evaluate(config, workdir, pipeline)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        pipeline: protocol.Pipeline) -> dict[str, float]:
  """`train_and_evaluate` under the workdir lock."""
  changes = validation.config_changes(config, workdir)
  mesh = training.make_mesh(config)
  data_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  replicated = NamedSharding(mesh, PartitionSpec())
  model = pipeline.build_model(config)
  tx = training.make_optimizer(config)
  datasets = input_pipeline.create_datasets(config)
  train_iter = iter(datasets.train)

  init = functools.partial(training.init_state, model, tx, pipeline.example_batch(config), config)
  abstract_state = jax.eval_shape(init)
  state_sharding = training.state_shardings(abstract_state, mesh,
                                   config.get("mesh", {}).get("fsdp_min_size", 2**16))
  checkpointer = checkpointing.Checkpointer(workdir, config.checkpoints_to_keep)
  new_data_order = validation.changes_data_order(changes)
  try:
    latest, state = checkpointer.restore_latest(
        jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                     abstract_state, state_sharding),
        None if new_data_order else train_iter)
  except ConfigError as e:
    checkpointer.close()
    if not changes:
      raise
    raise ConfigError(f"{e} Changed since the checkpoint: {', '.join(map(str, changes))}; "
                      "set these back, or train in another --workdir.") from None
  validation.check_steps(config, latest, workdir)
  if latest is not None:
    logging.info("Resuming from the checkpoint at step %d.", latest)
    if changes:
      logging.warning("Resuming with a changed config (%s); the checkpoint fits it.%s",
                      ", ".join(map(str, changes)),
                      " The data position is not restored, so only the data order changes."
                      if new_data_order else "")
  else:
    state = jax.jit(init, out_shardings=state_sharding)()
    parameter_overview.log_parameter_overview(state.params)
  initial_step = int(state.step)

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=False)
  if initial_step == 0:
    writer.write_hparams({k: str(v) for k, v in config.items()})
  train_step = jax.jit(training.make_train_step(model, tx, config),
                       in_shardings=(state_sharding, data_sharding),
                       out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  state_check = jax.jit(training.make_state_check(model, config),
                        in_shardings=(state_sharding, data_sharding), out_shardings=replicated)
  eval_step = jax.jit(pipeline.make_eval_step(model, config),
                      in_shardings=(state_sharding.params, data_sharding, replicated))

  def run_eval(state: training.TrainState, step: int) -> dict[str, float]:
    with input_pipeline.naming_data_errors(config):
      return evaluator.evaluate(state.params, pipeline, eval_step, datasets, config,
                                data_sharding, writer, step)

  if config.num_train_steps in (0, initial_step):
    scalars = run_eval(state=state, step=initial_step)
    _print_eval(initial_step, scalars)
    checkpointer.close()
    return scalars

  save_config(config, workdir)  # Only now: every check has passed, and training starts.
  report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps,
                                           writer=writer)
  preemption = _Preemption()
  pending: list[dict[str, Array]] = []  # Step scalars since the last log, still on device.
  scalars = {}
  step = initial_step
  start = time.time()
  try:
    while step < config.num_train_steps:
      with input_pipeline.naming_data_errors(config):
        batch = evaluator.global_batch(next(train_iter), data_sharding)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, step_scalars = train_step(state, batch)
      step += 1
      pending.append(step_scalars)
      if len(pending) > _STEPS_IN_FLIGHT:  # Keep the host a few steps ahead, no more.
        jax.block_until_ready(pending[-_STEPS_IN_FLIGHT - 1])
      report(step, time.time())
      last = step == config.num_train_steps
      stop = preemption.signal  # Read once: the signal may arrive at any time.
      save = step % config.checkpoint_every_steps == 0 or last or stop
      if step % config.log_loss_every_steps == 0 or save:
        values = {f"train/{k}": v
                  for k, v in metrics.mean_train_scalars(jax.device_get(pending)).items()}
        if not np.isfinite(values["train/loss"]):
          raise FloatingPointError(
              f"Loss is {values['train/loss']} at step {step} (averaged since the last log); "
              f"the last good checkpoint (step {checkpointer.latest_step()}) is kept. "
              "Lower learning_rate or set max_grad_norm.")
        if step % config.log_loss_every_steps == 0 or last:
          writer.write_scalars(step, values)
          pending = []
      if save:
        if not state_check(state, batch):
          raise FloatingPointError(
              f"The state after step {step} has non-finite parameters, optimizer state or "
              f"loss, so it is not saved; the last good checkpoint (step "
              f"{checkpointer.latest_step()}) is kept. Lower learning_rate or set max_grad_norm.")
        checkpointer.save(step, state, train_iter)
      if stop == signal.SIGINT:
        raise KeyboardInterrupt(f"Interrupted; step {step} is checkpointed. Run the same "
                                "command to resume.")
      if stop:
        logging.warning("Checkpointed step %d after SIGTERM; exiting.", step)
        break
      if step % config.eval_every_steps == 0 or last:
        scalars = run_eval(state=state, step=step)
        _print_eval(step, scalars, elapsed=time.time() - start)
  finally:
    preemption.restore()
    writer.flush()
    checkpointer.close()
  return scalars


def _print_eval(step: int, scalars: dict[str, float], elapsed: float | None = None) -> None:
  if jax.process_index() != 0:
    return
  parts = [f"step {step}"]
  if elapsed is not None:
    parts.append(f"{elapsed / 60:.1f} min")
  # The per-rank slot shares stay in TensorBoard.
  parts += [f"{k.removeprefix('eval/')}={v:.4f}" for k, v in sorted(scalars.items())
            if "/share_rank_" not in k]
  print("eval: " + "  ".join(parts), flush=True)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `workdir/config.json` (process 0), which `invariant_slots.predict` loads.

  Written to a temporary file first, then renamed, so a kill never leaves half a file.
  """
  if jax.process_index() == 0:
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
      f.write(config.to_json(indent=2))
    os.replace(path + ".tmp", path)
