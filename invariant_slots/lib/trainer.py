"""The training loop shared by all pipelines: one jitted step over a device mesh."""

import contextlib
import functools
import os
import signal
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from invariant_slots import pipelines
from invariant_slots.lib import checkpointing
from invariant_slots.lib import evaluator
from invariant_slots.lib import input_pipeline
from invariant_slots.lib import losses
from invariant_slots.lib import metrics
from invariant_slots.lib import validation
from invariant_slots.lib import workdir_lock
from invariant_slots.registry import ConfigError

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  step: Array
  params: Any
  opt_state: Any
  rng: Array  # Raw uint32 key, so it checkpoints as a plain array.


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then cosine, exponential or constant."""
  decay_steps = max(config.num_train_steps - config.warmup_steps, 1)
  if config.lr_schedule == "cosine":
    decay = optax.cosine_decay_schedule(config.learning_rate, decay_steps)
  elif config.lr_schedule == "exponential":
    decay = optax.exponential_decay(config.learning_rate, config.lr_decay_steps,
                                    config.lr_decay_rate)
  elif config.lr_schedule == "constant":
    decay = optax.constant_schedule(config.learning_rate)
  else:
    raise ConfigError(f"Unknown lr_schedule {config.lr_schedule!r}; "
                      "use 'cosine', 'exponential' or 'constant'.")
  warmup = optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1))
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(config)
  parts = [optax.clip_by_global_norm(config.max_grad_norm)] if config.max_grad_norm else []
  return optax.chain(*parts, optax.adam(schedule))


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
  """A `(data, fsdp)` mesh over every device of every process.

  `config.mesh.fsdp` devices share each large parameter (ZeRO-3 style); the
  default of 1 is pure data parallelism. The batch is split over both axes.
  """
  fsdp = config.get("mesh", {}).get("fsdp", 1)
  if jax.device_count() % fsdp:
    raise ConfigError(f"mesh.fsdp={fsdp} does not divide the {jax.device_count()} devices.")
  return Mesh(np.asarray(jax.devices()).reshape(-1, fsdp), ("data", "fsdp"))


def state_shardings(abstract_state: Any, mesh: Mesh, min_size: int) -> Any:
  """Shards each array of at least `min_size` elements along `fsdp` on its
  largest dimension divisible by the axis size; replicates the rest."""
  fsdp = mesh.shape["fsdp"]

  def sharding(leaf) -> NamedSharding:
    spec = [None] * leaf.ndim
    if fsdp > 1 and leaf.size >= min_size:
      divisible = [d for d in range(leaf.ndim) if leaf.shape[d] % fsdp == 0]
      if divisible:
        spec[max(divisible, key=lambda d: leaf.shape[d])] = "fsdp"
    return NamedSharding(mesh, PartitionSpec(*spec))

  return jax.tree.map(sharding, abstract_state)


def init_state(model, tx, example_batch: dict[str, Array],
               config: ml_collections.ConfigDict) -> TrainState:
  rng = jax.random.PRNGKey(config.seed)
  init_rng, slots_rng, state_rng = jax.random.split(rng, 3)
  params = model.init({"params": init_rng, "slots": slots_rng}, example_batch)["params"]
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                    opt_state=tx.init(params), rng=state_rng)


def cast_floating(tree: Any, dtype: jnp.dtype) -> Any:
  """Casts the floating-point leaves of `tree` to `dtype`."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """`config.dtype` (default float32) as a floating-point dtype."""
  name = config.get("dtype", "float32")
  if name not in ("float32", "bfloat16", "float16"):
    raise ConfigError(f"dtype must be float32, bfloat16 or float16, got {name!r}.")
  return jnp.dtype(name)


def make_loss_fn(model, config: ml_collections.ConfigDict):
  """`loss_fn(params, batch, rng) -> mean training loss`, computed in `config.dtype`."""
  dtype = compute_dtype(config)

  def loss_fn(params, batch: dict[str, Array], rng: Array) -> Array:
    outputs = model.apply({"params": cast_floating(params, dtype)},
                          cast_floating(batch, dtype), train=True, rngs={"slots": rng})
    outputs = cast_floating(outputs, jnp.float32)
    return jnp.mean(losses.per_example_loss(config.losses, outputs, batch))

  return loss_fn


def micro_batches(batch: dict[str, Array], num: int) -> dict[str, Array]:
  """`[batch, ...]` leaves -> `[num, batch // num, ...]`.

  Micro-batch `i` holds rows `i, i + num, i + 2 num, ...`, so that every
  device's contiguous shard of the batch feeds every micro-batch equally.
  """
  def split(x: Array) -> Array:
    return jnp.swapaxes(x.reshape(x.shape[0] // num, num, *x.shape[1:]), 0, 1)

  return jax.tree.map(split, batch)


def make_train_step(model, tx, config: ml_collections.ConfigDict):
  """`train_step(state, batch) -> (state, TrainMetrics)`.

  With `config.dtype` = "bfloat16" (or "float16") the forward and backward pass
  run in that dtype on a cast copy of the parameters and inputs; parameters,
  gradients, optimizer state and the loss stay in float32. With
  `config.grad_accum_steps` = k > 1 the gradient is the mean of k micro-batch
  gradients (`micro_batches`, scanned one after another), each with its own
  random key; for a model without random draws it equals the full batch's.
  """
  schedule = learning_rate_schedule(config)
  loss_fn = make_loss_fn(model, config)
  num_micro = config.get("grad_accum_steps", 1)

  def loss_and_grads(params, batch: dict[str, Array], rng: Array):
    if num_micro == 1:
      return jax.value_and_grad(loss_fn)(params, batch, rng)

    def accumulate(total, micro):
      index, micro_batch = micro
      value = jax.value_and_grad(loss_fn)(params, micro_batch, jax.random.fold_in(rng, index))
      return jax.tree.map(jnp.add, total, value), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    total, _ = jax.lax.scan(accumulate, zeros,
                            (jnp.arange(num_micro), micro_batches(batch, num_micro)))
    return jax.tree.map(lambda x: x / num_micro, total)

  def train_step(state: TrainState, batch: dict[str, Array]):
    rng = jax.random.fold_in(state.rng, state.step)
    loss, grads = loss_and_grads(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    train_metrics = metrics.TrainMetrics.single_from_model_output(
        loss=loss, grad_norm=optax.global_norm(grads), learning_rate=schedule(state.step))
    return new_state, train_metrics

  return train_step


def make_state_check(model, config: ml_collections.ConfigDict):
  """`state_check(state, batch) -> bool`: whether `state` is fit to be saved.

  True when its parameters and optimizer state are finite and so is the loss of
  its parameters on `batch`: a diverged update can leave huge but finite
  parameters whose next loss is already NaN.
  """
  loss_fn = make_loss_fn(model, config)

  def state_check(state: TrainState, batch: dict[str, Array]) -> Array:
    leaves = [x for x in jax.tree.leaves((state.params, state.opt_state))
              if jnp.issubdtype(x.dtype, jnp.floating)]
    loss = loss_fn(state.params, batch, jax.random.fold_in(state.rng, state.step))
    return jnp.all(jnp.stack([jnp.isfinite(loss)] + [jnp.all(jnp.isfinite(x)) for x in leaves]))

  return state_check


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest readable checkpoint.

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
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """`train_and_evaluate` under the workdir lock."""
  changes = validation.config_changes(config, workdir)
  mesh = make_mesh(config)
  data_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  replicated = NamedSharding(mesh, PartitionSpec())
  pipeline = pipelines.get_pipeline(config)
  model = pipeline.build_model(config)
  tx = make_optimizer(config)
  datasets = input_pipeline.create_datasets(config)
  train_iter = iter(datasets.train)

  init = functools.partial(init_state, model, tx, pipeline.example_batch(config), config)
  abstract_state = jax.eval_shape(init)
  state_sharding = state_shardings(abstract_state, mesh,
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
  train_step = jax.jit(make_train_step(model, tx, config),
                       in_shardings=(state_sharding, data_sharding),
                       out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  state_check = jax.jit(make_state_check(model, config),
                        in_shardings=(state_sharding, data_sharding), out_shardings=replicated)
  eval_step = jax.jit(pipeline.make_eval_step(model, config),
                      in_shardings=(state_sharding.params, data_sharding, replicated))

  def run_eval(state: TrainState, step: int) -> dict[str, float]:
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
  train_metrics = None
  scalars = {}
  step = initial_step
  start = time.time()
  try:
    while step < config.num_train_steps:
      with input_pipeline.naming_data_errors(config):
        batch = evaluator.global_batch(next(train_iter), data_sharding)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, step_metrics = train_step(state, batch)
      step += 1
      train_metrics = step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
      report(step, time.time())
      last = step == config.num_train_steps
      stop = preemption.signal  # Read once: the signal may arrive at any time.
      save = step % config.checkpoint_every_steps == 0 or last or stop
      if step % config.log_loss_every_steps == 0 or save:
        values = {f"train/{k}": float(v) for k, v in train_metrics.compute().items()}
        if not np.isfinite(values["train/loss"]):
          raise FloatingPointError(
              f"Loss is {values['train/loss']} at step {step} (averaged since the last log); "
              f"the last good checkpoint (step {checkpointer.latest_step()}) is kept. "
              "Lower learning_rate or set max_grad_norm.")
        if step % config.log_loss_every_steps == 0 or last:
          writer.write_scalars(step, values)
          train_metrics = None
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
  parts += [f"{k.removeprefix('eval/')}={v:.4f}" for k, v in sorted(scalars.items())]
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
