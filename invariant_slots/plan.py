"""Memory plan of a config before paying for a pod: `python -m invariant_slots.plan`.

    python -m invariant_slots.plan --config=configs/msn_hard.py --devices=32 \
        --accelerator=v4 --config.grad_accum_steps=4 --config.remat=True
    python -m invariant_slots.plan --config=configs/msn_hard.py --tpu_topology=v4:4x4x2

Compiles the real train step (the one `main` runs) for `--devices` devices
without data and without training: for forced host CPU devices, or, with
`--tpu_topology`, ahead of time for that Cloud TPU slice by the TPU compiler
itself (needs libtpu: `pip install -e ".[tpu]"`; no TPU needed). Prints the
parameter count, the parameter and optimizer bytes per device replicated and
sharded over `fsdp`, the compiled step's memory per device
(`compiled.memory_analysis()`) and whether the sum fits the HBM of
`--accelerator` (or `--hbm_gib`). Compiled for CPU, the temporary memory is an
estimate of an accelerator's: XLA:CPU neither fuses nor schedules as the TPU
and GPU compilers do (docs/scaling.md).
"""

import functools
import os

from absl import app
from absl import flags

from invariant_slots import cli
from invariant_slots.lib import validation
from invariant_slots.registry import ConfigError

# HBM per device (GiB) of common accelerators (per chip; a v4 or v5p chip is one JAX device).
HBM_GIB = {"v4": 32.0, "v5e": 16.0, "v5p": 95.0, "v6e": 32.0, "A100-40": 40.0,
           "A100-80": 80.0, "H100": 80.0, "H200": 141.0}

_DEVICES = flags.DEFINE_integer("devices", None, "Number of devices of the planned run "
                                "(CPU plan; with --tpu_topology, its chips).")
_TPU_TOPOLOGY = flags.DEFINE_string(
    "tpu_topology", None, "Compile for this TPU slice with libtpu, e.g. v4:4x4x2 (32 chips) "
    "or v5e:4x8; --accelerator defaults to its generation.")
_ACCELERATOR = flags.DEFINE_enum("accelerator", "v4", list(HBM_GIB),
                                 "Accelerator whose HBM the plan is checked against.")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "HBM per device in GiB (overrides --accelerator).")

GIB = 2**30


def _force_host_devices(count: int) -> None:
  """Asks XLA for `count` CPU devices; must run before JAX is imported."""
  flag = f"--xla_force_host_platform_device_count={count}"
  os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), flag]).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _bytes_per_device(tree, shardings) -> int:
  """Bytes of `tree` that one device holds under `shardings`."""
  import jax  # pylint: disable=g-import-not-at-top
  leaves = jax.tree.leaves(tree)
  specs = jax.tree.leaves(shardings, is_leaf=lambda s: hasattr(s, "shard_shape"))
  total = 0
  for leaf, sharding in zip(leaves, specs):
    shard = sharding.shard_shape(leaf.shape)
    size = 1
    for dim in shard:
      size *= dim
    total += size * leaf.dtype.itemsize
  return total


def tpu_devices(topology: str) -> list:
  """The devices of a TPU slice, e.g. "v4:4x4x2", for ahead-of-time compilation."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    # v4 and v5p chips run their two TensorCores as one JAX device (megacore).
    chip_config = "megacore" if topology.split(":")[0] in ("v4", "v5p") else "default"
    return list(topologies.get_topology_desc(topology, platform="tpu",
                                             chip_config_name=chip_config).devices)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"Cannot compile for TPU topology {topology!r} ({str(e).strip()[:200]}); "
                      "install libtpu with pip install -e \".[tpu]\" and name a slice as "
                      "GENERATION:SHAPE, e.g. v4:4x4x2.") from None


def plan(config, num_devices: int, hbm_gib: float,
         devices: list | None = None) -> list[tuple[str, str]]:
  """Compiles `config`'s train step on `num_devices` devices (or `devices`, e.g. a TPU
  slice's); returns `(row, value)` lines."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  from invariant_slots.lib import model_specs  # pylint: disable=g-import-not-at-top
  from invariant_slots.lib import training  # pylint: disable=g-import-not-at-top

  if devices is None and jax.device_count() != num_devices:
    raise ConfigError(f"JAX sees {jax.device_count()} devices, not --devices={num_devices}; "
                      "run the plan on a CPU machine (it forces that many host devices).")
  accum = config.get("grad_accum_steps", 1)
  if config.batch_size % (num_devices * accum):
    raise ConfigError(f"batch_size {config.batch_size} is not divisible by {num_devices} "
                      f"devices x grad_accum_steps {accum}; change one of them.")
  model = model_specs.build_model(config)
  tx = training.make_optimizer(config)
  init = functools.partial(training.init_state, model, tx, model_specs.example_batch(config),
                           config)
  abstract_state = jax.eval_shape(init)
  min_size = config.get("mesh", {}).get("fsdp_min_size", 2**16)
  fsdp = config.get("mesh", {}).get("fsdp", 1)
  mesh = training.make_mesh(config, devices)
  state_sharding = training.state_shardings(abstract_state, mesh, min_size)
  replicated_mesh = training.make_mesh(_with_fsdp(config, fsdp=1), devices)
  replicated = training.state_shardings(abstract_state, replicated_mesh, min_size)
  sharded_fsdp = fsdp if fsdp > 1 else num_devices
  sharded = training.state_shardings(
      abstract_state, training.make_mesh(_with_fsdp(config, fsdp=sharded_fsdp), devices),
      min_size)

  data_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  step = jax.jit(training.make_train_step(model, tx, config),
                 in_shardings=(state_sharding, data_sharding),
                 out_shardings=(state_sharding, NamedSharding(mesh, PartitionSpec())),
                 donate_argnums=(0,))
  with_sharding = lambda tree, shardings: jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
  batch = model_specs.train_batch(config)
  compiled = step.lower(with_sharding(abstract_state, state_sharding),
                        with_sharding(batch, jax.tree.map(lambda _: data_sharding, batch))
                        ).compile()
  memory = compiled.memory_analysis()

  num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
  state_bytes = _bytes_per_device(abstract_state, state_sharding)
  batch_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
      model_specs.train_batch(config))) // num_devices
  temp = memory.temp_size_in_bytes
  total = state_bytes + batch_bytes + temp
  gib = lambda n: f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.2f} MiB"
  return [
      ("config", f"batch {config.batch_size} on {num_devices} "
                 f"{devices[0].device_kind if devices else 'forced CPU'} devices "
                 f"(mesh data x fsdp = {num_devices // fsdp} x {fsdp}), "
                 f"grad_accum_steps {accum}, remat {config.get('remat', False)}, "
                 f"dtype {config.get('dtype', 'float32')}"),
      ("parameters", f"{num_params:,}"),
      ("params + optimizer per device, replicated",
       gib(_bytes_per_device(abstract_state, replicated))),
      (f"params + optimizer per device, fsdp={sharded_fsdp}",
       gib(_bytes_per_device(abstract_state, sharded))),
      ("batch per device", gib(batch_bytes)),
      ("compiled step: temporary memory per device", gib(temp)),
      ("total per device (state as configured + batch + temporary)", gib(total)),
      ("fits", f"{'yes' if total <= hbm_gib * GIB else 'NO'} "
               f"({total / (hbm_gib * GIB):.0%} of {hbm_gib:g} GiB)"),
  ]


def _with_fsdp(config, fsdp: int):
  """A copy of `config` with `mesh.fsdp` set to `fsdp`."""
  copy = config.copy_and_resolve_references()
  with copy.unlocked():
    copy.mesh.fsdp = fsdp
  return copy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config, num_devices, topology = cli.CONFIG.value, _DEVICES.value, _TPU_TOPOLOGY.value
  if topology is None and num_devices is None:
    cli.fail("Pass --devices=N (forced CPU devices) or --tpu_topology=GEN:SHAPE (e.g. v4:4x4x2).")
  if num_devices is not None and num_devices < 1:
    cli.fail(f"--devices must be >= 1, got {num_devices}.")
  accelerator = _ACCELERATOR.value
  if topology and not flags.FLAGS["accelerator"].present:
    accelerator = topology.split(":")[0]
    if accelerator not in HBM_GIB:
      cli.fail(f"No known HBM for {accelerator!r}; pass --hbm_gib.")
  hbm_gib = _HBM_GIB.value or HBM_GIB[accelerator]
  try:
    validation.check_values(config)
    devices = None
    if topology:
      # JAX runs on the CPU; libtpu only compiles, with no TPU host to look up.
      os.environ.setdefault("JAX_PLATFORMS", "cpu")
      os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
      os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
      devices = tpu_devices(topology)
      if num_devices not in (None, len(devices)):
        raise ConfigError(f"--tpu_topology={topology} has {len(devices)} devices, not "
                          f"--devices={num_devices}; drop --devices.")
      num_devices = len(devices)
    else:
      _force_host_devices(num_devices)
    rows = plan(config, num_devices, hbm_gib, devices)
  except ConfigError as e:
    cli.fail(str(e))
  width = max(len(name) for name, _ in rows)
  for name, value in rows:
    print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
  cli.use_flags("config")
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.parse_flags)
