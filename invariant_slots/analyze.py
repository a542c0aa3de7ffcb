"""Dynamics of a trained corrector: `python -m invariant_slots.analyze --workdir=DIR`.

Loads the run's config (or `--config`) and its newest readable checkpoint (or
`--step`) and, on the first `--num_scenes` eval
scenes, follows the corrector's slots step by step (iterations or layers; for
SlotODE the states at times 0, dt, 2 dt, ... T). At every step it records the
forward residual `||s_{t+1} - s_t||` per example (`||f(S)||` for SlotODE) and,
for the Jacobian `J` of the update map (the vector field for SlotODE) with
respect to all slots (`num_slots * slot_size` square, forward mode), its
eigenvalues, trace and log-norm `lambda_max((J + J^T) / 2)`. For SlotODE it
also counts the eval solver's adaptive steps on `--num_count_scenes` eval
scenes, grouped by the number of objects in the ground truth, with the
least-squares slope of steps on objects and its standard error. Writes
`analysis.json` and PNG plots to `--output_dir` (default `DIR/analysis`) and
prints a summary table.
"""

import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app
from absl import flags

from invariant_slots import cli
from invariant_slots.modules import correctors
from invariant_slots.registry import ConfigError

Array = jax.Array
UpdateMap = Callable[[Array], Array]

_NUM_SCENES = flags.DEFINE_integer("num_scenes", 8, "Eval scenes for residuals and Jacobians.")
_NUM_COUNT_SCENES = flags.DEFINE_integer(
    "num_count_scenes", 512, "Eval scenes for SlotODE step counts by number of objects.")


def jacobians(update: UpdateMap, slots: Array) -> Array:
  """Per-example Jacobians of `update` (`[batch, K, D]` -> same) at `slots`.

  Forward mode, as `jax.jacfwd`: one JVP per input direction. Examples do not
  interact, so each direction is pushed through all examples at once and the
  columns of every example's Jacobian come out together.

  Returns:
    `[batch, K * D, K * D]`, row index = output, column index = input.
  """
  batch, shape = slots.shape[0], slots.shape[1:]
  size = int(np.prod(shape))
  basis = jnp.eye(size, dtype=slots.dtype).reshape((size, 1) + shape)
  tangents = jnp.broadcast_to(basis, (size, batch) + shape)
  columns = jax.vmap(lambda tangent: jax.jvp(update, (slots,), (tangent,))[1])(tangents)
  return columns.reshape(size, batch, size).transpose(1, 2, 0)


def jacobian_statistics(jacobian: np.ndarray) -> dict[str, np.ndarray]:
  """Eigenvalues `[..., n]` (complex), trace `[...]` and log-norm `[...]` of `[..., n, n]`.

  The log-norm (2-norm logarithmic norm) is the largest eigenvalue of the
  symmetric part `(J + J^T) / 2`; the spectral radius is `max |eigenvalue|`.
  """
  jacobian = np.asarray(jacobian, np.float64)
  eigenvalues = np.linalg.eigvals(jacobian)
  symmetric = 0.5 * (jacobian + np.swapaxes(jacobian, -1, -2))
  return {"eigenvalues": eigenvalues,
          "trace": np.trace(jacobian, axis1=-2, axis2=-1),
          "log_norm": np.linalg.eigvalsh(symmetric)[..., -1],
          "spectral_radius": np.max(np.abs(eigenvalues), axis=-1)}


def _flat_norm(x: Array) -> np.ndarray:
  return np.linalg.norm(np.asarray(x).reshape(x.shape[0], -1), axis=-1)


def corrector_dynamics(corrector, params, slots: Array,
                       inputs: Array) -> tuple[str, list[tuple[Array, UpdateMap]]]:
  """The step maps of a corrector along its own trajectory.

  Args:
    corrector: An unbound corrector module from `CORRECTORS`.
    params: Its parameters.
    slots: Initial slots `[batch, K, D]`.
    inputs: Encoder features `[batch, N, Din]`.

  Returns:
    `(kind, steps)`: kind "map" (discrete steps: the residual is
    `||F(s) - s||`) or "field" (SlotODE: the residual is `||f(s)||`), and one
    `(state, update map)` per step.
  """
  variables = {"params": params}
  if isinstance(corrector, correctors.SlotODE):
    keys, values = corrector.apply(
        variables, inputs, method=lambda m, x: m.field.project_inputs(x))
    field = lambda s: corrector.apply(  # pylint: disable=g-long-lambda
        variables, s, keys, values, method=lambda m, *a: m.field(*a))
    states, _ = ode_trajectory(corrector, params, slots, inputs)
    return "field", [(states[:, i], field) for i in range(states.shape[1])]
  if isinstance(corrector, correctors.SlotAttention):
    keys, values = corrector.apply(
        variables, inputs, method=lambda m, x: m.attention.project_inputs(m.norm_inputs(x)))
    update = lambda s: corrector.apply(  # pylint: disable=g-long-lambda
        variables, s, keys, values, method=lambda m, *a: m.step(*a)[0])
    maps = [update] * corrector.num_iterations
  elif isinstance(corrector, correctors.TransformerCorrector):
    layer = correctors.transformer_layer(corrector)
    maps = [lambda s, p=params[f"layer_{i}"]: layer.apply({"params": p}, s, inputs)[0]
            for i in range(corrector.num_iterations)]
  else:
    raise ConfigError(f"analyze has no dynamics for corrector {type(corrector).__name__}; "
                      "it handles Slot Attention, Transformer and SlotODE correctors.")
  steps = []
  for update in maps:
    steps.append((slots, update))
    slots = update(slots)
  return "map", steps


def save_times(corrector) -> tuple[float, ...]:
  """`0, dt, 2 dt, ..., T` for a SlotODE."""
  num = int(np.ceil(corrector.T / corrector.dt - 1e-6))
  return tuple(min(i * corrector.dt, corrector.T) for i in range(num + 1))


@functools.partial(jax.jit, static_argnums=0)
def ode_trajectory(corrector, params, slots: Array, inputs: Array) -> tuple[Array, Array]:
  """A SlotODE's eval-solver states at `save_times` `[batch, times, K, D]` and steps `[batch]`."""
  return corrector.apply(
      {"params": params}, slots, inputs,
      method=lambda m, s, x: m.integrate(s, *m.field.project_inputs(x), m.eval_solver,
                                         save_times(m)))


def step_statistics(kind: str, steps: list[tuple[Array, UpdateMap]]) -> list[dict[str, Any]]:
  """Residuals and Jacobian statistics per step, each `[batch]` (eigenvalues `[batch, n]`)."""
  results = []
  compiled = {}  # One compilation per distinct update map.
  for state, update in steps:
    if update not in compiled:
      compiled[update] = jax.jit(lambda s, u=update: (u(s), jacobians(u, s)))
    image, jacobian = compiled[update](state)
    residual = _flat_norm(image if kind == "field" else image - state)
    stats = jacobian_statistics(jacobian)
    results.append({"residual": residual, **stats})
  return results


def num_objects(segmentations: np.ndarray) -> np.ndarray:
  """Distinct non-background ids per example: `[batch, ..., 1]` -> int `[batch]`."""
  flat = np.asarray(segmentations).reshape(len(segmentations), -1)
  return np.array([np.count_nonzero(np.unique(row)) for row in flat])


def linear_trend(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
  """Least-squares slope of `y` on `x` (`[n]` each) and its standard error."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 3 or np.ptp(x) == 0:
    return {"slope": float("nan"), "stderr": float("nan")}
  dx = x - x.mean()
  slope = float(dx @ (y - y.mean()) / (dx @ dx))
  residuals = y - y.mean() - slope * dx
  stderr = float(np.sqrt(residuals @ residuals / (len(x) - 2) / (dx @ dx)))
  return {"slope": slope, "stderr": stderr}


def _summary(values: np.ndarray) -> dict[str, float]:
  return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def analyze(config: ml_collections.ConfigDict, workdir: str, output_dir: str,
            num_scenes: int = 8, num_count_scenes: int = 512,
            step: int | None = None) -> dict[str, Any]:
  """Runs the analysis (see the module docstring); returns what it writes to JSON."""
  from invariant_slots.lib import checkpointing  # pylint: disable=g-import-not-at-top
  from invariant_slots.lib import input_pipeline  # pylint: disable=g-import-not-at-top
  from invariant_slots.lib import model_specs  # pylint: disable=g-import-not-at-top

  model = model_specs.build_model(config)
  if not all(hasattr(model, part) for part in ("encoder", "initializer", "corrector")):
    raise ConfigError(f"analyze needs an encoder-initializer-corrector model; pipeline "
                      f"{config.get('pipeline', 'images')!r} builds {type(model).__name__}.")
  step, params = checkpointing.load_params(workdir, config, step)

  def corrector_inputs(module, image):
    features = module.encoder(image, train=False)
    inputs = features.reshape(features.shape[0], -1, features.shape[-1])
    return module.initializer(features.shape[0]), inputs

  prepare = jax.jit(lambda image: model.apply(
      {"params": params}, image, method=corrector_inputs,
      rngs={"slots": jax.random.PRNGKey(config.seed + 1)}))
  corrector = model.corrector
  corrector_params = params["corrector"]
  is_ode = isinstance(corrector, correctors.SlotODE)

  eval_data = input_pipeline.create_datasets(config).eval.as_numpy_iterator()
  images, objects, counts = [], [], []
  seen = 0
  for batch in eval_data:
    if seen >= max(num_scenes, num_count_scenes if is_ode else 0):
      break
    seen += len(batch["image"])
    images.append(batch["image"])
    objects.append(num_objects(batch["segmentations"]))
    if is_ode:
      slots, inputs = prepare(batch["image"])
      counts.append(np.asarray(ode_trajectory(corrector, corrector_params, slots, inputs)[1]))
  images = np.concatenate(images)[:num_scenes]
  objects = np.concatenate(objects)

  slots, inputs = prepare(images)
  kind, steps = corrector_dynamics(corrector, corrector_params, slots, inputs)
  per_step = step_statistics(kind, steps)
  result = {
      "checkpoint_step": step,
      "corrector": config.model.corrector.name,
      "kind": kind,
      "num_scenes": len(images),
      "num_objects": objects[:len(images)].tolist(),
      "steps": [{
          "time": save_times(corrector)[i] if is_ode else i,
          **{key: _summary(value) for key, value in stats.items() if key != "eigenvalues"},
          "per_scene": {key: np.asarray(value).tolist()
                        for key, value in stats.items() if key != "eigenvalues"},
          "eigenvalues_real": np.real(stats["eigenvalues"]).tolist(),
          "eigenvalues_imag": np.imag(stats["eigenvalues"]).tolist(),
      } for i, stats in enumerate(per_step)],
  }
  if is_ode:
    counts = np.concatenate(counts)[:num_count_scenes]
    objects = objects[:len(counts)]
    result["solver"] = corrector.eval_solver
    result["solver_steps_by_objects"] = {
        int(n): {"mean": float(counts[objects == n].mean()),
                 "std": float(counts[objects == n].std()),
                 "num_scenes": int(np.sum(objects == n))}
        for n in np.unique(objects)}
    result["solver_steps_trend"] = linear_trend(objects, counts)
    result["solver_steps_per_scene"] = counts.tolist()
    result["num_objects_per_scene"] = objects.tolist()
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "analysis.json"), "w") as f:
    json.dump(result, f, indent=1)
  _plot(result, output_dir)
  print(summary_table(result))
  return result


def summary_table(result: dict[str, Any]) -> str:
  """Plain-text tables of the per-step statistics and the step counts."""
  residual = "||f(S)||" if result["kind"] == "field" else "||s_t+1 - s_t||"
  lines = [f"{result['corrector']} (checkpoint step {result['checkpoint_step']}, "
           f"{result['num_scenes']} scenes); mean +- std over scenes",
           f"{'step/time':>9}  {residual:>18}  {'spectral radius':>18}  {'trace':>20}  "
           f"{'log-norm':>18}"]
  for step in result["steps"]:
    cells = [f"{step[k]['mean']:9.3f} +- {step[k]['std']:<6.3f}"
             for k in ("residual", "spectral_radius", "trace", "log_norm")]
    lines.append(f"{step['time']:>9}  " + "  ".join(cells))
  if "solver_steps_by_objects" in result:
    lines.append(f"\n{result['solver']} steps by number of objects")
    lines.append(f"{'objects':>7}  {'scenes':>6}  {'mean steps':>10}  {'std':>6}")
    for n, entry in result["solver_steps_by_objects"].items():
      lines.append(f"{n:>7}  {entry['num_scenes']:>6}  {entry['mean']:>10.2f}  "
                   f"{entry['std']:>6.2f}")
    trend = result["solver_steps_trend"]
    lines.append(f"least-squares slope: {trend['slope']:+.3f} +- {trend['stderr']:.3f} "
                 "steps per object")
  return "\n".join(lines)


def _plot(result: dict[str, Any], output_dir: str) -> None:
  """Writes dynamics.png (statistics per step), eigenvalues.png and, for SlotODE, steps.png."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  times = [step["time"] for step in result["steps"]]
  names = ("residual", "spectral_radius", "trace", "log_norm")
  figure, axes = plt.subplots(1, 4, figsize=(16, 3.5))
  for axis, name in zip(axes, names):
    means = np.array([step[name]["mean"] for step in result["steps"]])
    stds = np.array([step[name]["std"] for step in result["steps"]])
    axis.errorbar(times, means, yerr=stds, marker="o", capsize=3)
    axis.set_title(name.replace("_", " "))
    axis.set_xlabel("time" if result["kind"] == "field" else "step")
  figure.suptitle(f"{result['corrector']}: dynamics over {result['num_scenes']} scenes")
  figure.tight_layout()
  figure.savefig(os.path.join(output_dir, "dynamics.png"), dpi=100)
  plt.close(figure)

  figure, axis = plt.subplots(figsize=(5, 5))
  colors = plt.cm.viridis(np.linspace(0, 1, len(result["steps"])))
  for step, color in zip(result["steps"], colors):
    axis.scatter(np.ravel(step["eigenvalues_real"]), np.ravel(step["eigenvalues_imag"]),
                 s=4, color=color, label=f"{step['time']}")
  axis.set_xlabel("Re")
  axis.set_ylabel("Im")
  axis.legend(title="time" if result["kind"] == "field" else "step", markerscale=3)
  axis.set_title("Jacobian eigenvalues")
  figure.tight_layout()
  figure.savefig(os.path.join(output_dir, "eigenvalues.png"), dpi=100)
  plt.close(figure)

  if "solver_steps_by_objects" in result:
    groups = result["solver_steps_by_objects"]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.errorbar(list(groups), [g["mean"] for g in groups.values()],
                  yerr=[g["std"] for g in groups.values()], marker="o", capsize=3)
    axis.set_xlabel("objects in the scene")
    axis.set_ylabel(f"{result['solver']} steps")
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "steps.png"), dpi=100)
    plt.close(figure)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  workdir = cli.WORKDIR.value
  output_dir = cli.OUTPUT_DIR.value or os.path.join(workdir, "analysis")
  try:
    analyze(cli.run_config(workdir), workdir, output_dir, _NUM_SCENES.value,
            _NUM_COUNT_SCENES.value, cli.STEP.value)
  except (ConfigError, FileNotFoundError) as e:
    cli.fail(str(e))


if __name__ == "__main__":
  cli.use_flags("workdir", "config", "step", "output_dir")
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=cli.parse_flags)
