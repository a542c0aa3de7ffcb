"""The training step and its state, with JAX, Flax, optax and ml_collections only.

Nothing here imports TensorFlow, TFDS or CLU, so the step compiles and runs on
a machine that has none of them (`invariant_slots.plan`, benchmarks/accelerator.py);
`lib/trainer.py` adds the data, checkpoints and metric writers around it.
"""

import re
from typing import Any, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from invariant_slots.lib import losses
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


def parameter_path(path: Sequence[Any]) -> str:
  """A parameter's tree path as `"encoder/head/TransformerBlock_0/Dense_0/kernel"`."""
  return "/".join(str(getattr(key, "key", key)) for key in path)


class FreezeState(NamedTuple):
  """`freeze_until`'s state: the number of updates applied so far."""
  count: Array


def freeze_until(pattern: str, until_step: int) -> optax.GradientTransformation:
  """Zeroes the updates of the parameters whose path fully matches `pattern`
  (a regular expression over `parameter_path`) for the first `until_step` steps.

  Chained after the optimizer, so its moments still see these gradients and the
  parameters start at the schedule's rate once released. A pattern that
  matches no parameter is a `ConfigError` that lists the top-level modules.
  """
  regex = re.compile(pattern)

  def frozen_mask(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, _: regex.fullmatch(parameter_path(path)) is not None, params)

  def init_fn(params: Any) -> FreezeState:
    if not any(jax.tree.leaves(frozen_mask(params))):
      raise ConfigError(f"freeze.params {pattern!r} matches no parameter; paths start with "
                        f"one of {', '.join(sorted(params))} and read like "
                        "'encoder/head/TransformerBlock_0/mlp_hidden/kernel'.")
    return FreezeState(count=jnp.zeros((), jnp.int32))

  def update_fn(updates: Any, state: FreezeState, params: Any = None):
    released = state.count >= until_step
    updates = jax.tree.map(lambda u, frozen: jnp.where(released, u, 0).astype(u.dtype)
                           if frozen else u, updates, frozen_mask(updates))
    return updates, FreezeState(count=state.count + 1)

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam on `learning_rate_schedule`, after global-norm clipping (`max_grad_norm`);
  `config.freeze` (`params` pattern, `until_step`) holds modules back (`freeze_until`)."""
  schedule = learning_rate_schedule(config)
  parts = [optax.clip_by_global_norm(config.max_grad_norm)] if config.max_grad_norm else []
  parts.append(optax.adam(schedule))
  freeze = config.get("freeze")
  if freeze:
    parts.append(freeze_until(freeze.params, freeze.until_step))
  return optax.chain(*parts)


def make_mesh(config: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
  """A `(data, fsdp)` mesh over `devices` (default: every device of every process).

  `config.mesh.fsdp` devices share each large parameter (ZeRO-3 style); the
  default of 1 is pure data parallelism. The batch is split over both axes.
  """
  devices = jax.devices() if devices is None else list(devices)
  fsdp = config.get("mesh", {}).get("fsdp", 1)
  if len(devices) % fsdp:
    raise ConfigError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} devices.")
  return Mesh(np.asarray(devices).reshape(-1, fsdp), ("data", "fsdp"))


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
  """`train_step(state, batch) -> (state, {loss, grad_norm, grad_norm_<module>, learning_rate})`.

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
    scalars = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step)}
    # Per top-level module (encoder, corrector, decoder, ...): which part learns.
    scalars.update({f"grad_norm_{name}": optax.global_norm(part) for name, part in grads.items()})
    return new_state, scalars

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
