"""Train-step speed and memory of the shipped configs on whatever devices JAX sees.

    python benchmarks/accelerator.py                      # every config, fp32 and bf16
    python benchmarks/accelerator.py --configs=movi_c,msn_hard --steps=20
    python benchmarks/accelerator.py --configs=shapes_multiview --remat=False,True \
        --config.model.ray_chunk_size=64

Needs JAX, Flax, optax and ml_collections only (no TensorFlow, TFDS or CLU),
so it runs on an accelerator machine without them. Each config runs at its own
batch size, halved until the step fits the devices' memory (or at most
`--max_batch`), on random inputs of the shapes its input pipeline produces.
Prints one row per config, dtype and remat setting: steps/s, examples/s, the
compiled step's temporary memory and the peak device memory (the compiled
step's arguments plus temporaries when the device does not report it).
"""

import argparse
import ast
import functools
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from invariant_slots import config_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from invariant_slots.lib import model_specs  # pylint: disable=g-import-not-at-top,wrong-import-position
from invariant_slots.lib import training  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIGS = ("shapes", "shapes_video", "shapes_multiview", "shapes_slot_ode", "clevr6",
           "tetrominoes", "movi_a", "movi_c", "movi_e", "msn_hard")


def _random_batch(specs: dict[str, jax.ShapeDtypeStruct], sharding) -> dict[str, jax.Array]:
  rng = np.random.default_rng(0)
  return {k: jax.device_put(rng.random(s.shape, dtype=np.float32), sharding)
          for k, s in specs.items()}


def time_step(config, num_steps: int) -> dict[str, float]:
  """Compiles `config`'s train step, runs `num_steps` timed steps after one warm-up."""
  mesh = training.make_mesh(config)
  model = model_specs.build_model(config)
  tx = training.make_optimizer(config)
  init = functools.partial(training.init_state, model, tx, model_specs.example_batch(config),
                           config)
  state_sharding = training.state_shardings(jax.eval_shape(init), mesh, 2**16)
  state = jax.jit(init, out_shardings=state_sharding)()
  data_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  batch = _random_batch(model_specs.train_batch(config), data_sharding)
  step = jax.jit(training.make_train_step(model, tx, config),
                 in_shardings=(state_sharding, data_sharding), donate_argnums=(0,))
  compiled = step.lower(state, batch).compile()
  memory = compiled.memory_analysis()
  state, scalars = compiled(state, batch)
  jax.block_until_ready(scalars)
  start = time.perf_counter()
  for _ in range(num_steps):
    state, scalars = compiled(state, batch)
  jax.block_until_ready(scalars)
  seconds = (time.perf_counter() - start) / num_steps
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  if peak is None:
    peak = memory.temp_size_in_bytes + memory.argument_size_in_bytes
  return {"steps_per_s": 1.0 / seconds, "examples_per_s": config.batch_size / seconds,
          "temp_gib": memory.temp_size_in_bytes / 2**30, "peak_gib": peak / 2**30,
          "loss": float(scalars["loss"])}


def _literal(value: str) -> Any:
  """A Python literal from the command line, else the string itself."""
  try:
    return ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value


def _is_out_of_memory(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def run(name: str, overrides: dict[str, Any], num_steps: int,
        max_batch: int | None) -> tuple[int, dict]:
  """(batch size that ran, timings) for one config, halving the batch on OOM."""
  config = config_files.load_config(os.path.join(REPO, "configs", f"{name}.py"), **overrides)
  batch_size = min(config.batch_size, max_batch or config.batch_size)
  while True:
    config.batch_size = max(batch_size - batch_size % jax.device_count(), jax.device_count())
    try:
      return config.batch_size, time_step(config, num_steps)
    except Exception as e:  # pylint: disable=broad-except
      if not _is_out_of_memory(e) or config.batch_size <= jax.device_count():
        raise
      batch_size = config.batch_size // 2


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default=",".join(CONFIGS))
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--remat", default="False", help="remat settings to compare")
  parser.add_argument("--max_batch", type=int, default=None,
                      help="cap on the batch size (for a smoke run on a CPU)")
  args, extra = parser.parse_known_args()
  overrides = {}
  for arg in extra:
    key, _, value = arg.removeprefix("--config.").partition("=")
    if not arg.startswith("--config.") or not value:
      parser.error(f"unknown argument {arg}; config overrides are --config.KEY=VALUE")
    overrides[key] = _literal(value)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} "
        f"({jax.default_backend()}), jax {jax.__version__}")
  print("| config | dtype | remat | batch | steps/s | examples/s | temporary (GiB) | "
        "peak (GiB) |")
  print("|---|---|---|---|---|---|---|---|")
  for name in args.configs.split(","):
    for dtype in args.dtypes.split(","):
      for remat in args.remat.split(","):
        row = f"| {name} | {dtype} | {remat}"
        options = {**overrides, "dtype": dtype, "remat": remat == "True"}
        try:
          batch_size, result = run(name, options, args.steps, args.max_batch)
        except Exception as e:  # pylint: disable=broad-except
          print(f"{row} | - | failed: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]} | | | |", flush=True)
          continue
        print(f"{row} | {batch_size} | {result['steps_per_s']:.2f} | "
              f"{result['examples_per_s']:.1f} | {result['temp_gib']:.3f} | "
              f"{result['peak_gib']:.3f} |", flush=True)


if __name__ == "__main__":
  main()
