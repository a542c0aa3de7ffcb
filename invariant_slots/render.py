"""Renders a scene from a camera orbit with a trained multi-view model.

    python -m invariant_slots.render --workdir=/tmp/mv --output_dir=/tmp/mv/orbit --scene=0

Loads the run's config (or `--config`) and its newest readable checkpoint (or
`--step`), infers the slots of
eval scene `--scene` from its input views and renders `config.render.num_frames`
views from cameras circling the scene (z up, looking at the origin) at the
mean distance and elevation of the input cameras, with a field of view of
`config.render.fov_deg`. Writes `frame_NNN.png` (rendering | slot-mask overlay)
and `orbit.gif` to `output_dir`.
"""

import os

import numpy as np
from absl import app
from absl import flags

from invariant_slots import cli

_SCENE = flags.DEFINE_integer("scene", 0, "Index of the scene in the eval split.")
_SCALE = flags.DEFINE_integer("scale", 4, "Integer upscaling of the written images.")


def orbit_geometry(origins: np.ndarray) -> tuple[float, float]:
  """Mean distance from the origin and elevation (degrees) of camera centres `[n, 3]`."""
  distances = np.linalg.norm(origins, axis=-1)
  elevations = np.degrees(np.arcsin(origins[:, 2] / distances))
  return float(distances.mean()), float(elevations.mean())


def render_orbit(config, params, model, example: dict[str, np.ndarray], seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Orbit renderings `[frames, H, W, 3]` and masks `[frames, H, W, num_slots]`."""
  import jax  # pylint: disable=g-import-not-at-top
  from invariant_slots.datasets import shapes_multiview  # pylint: disable=g-import-not-at-top

  height, width = config.data.resolution
  inputs = {k: example[k][None] for k in ("input_image", "input_origins", "input_directions")}
  distance, elevation = orbit_geometry(example["input_origins"][:, 0, 0])

  @jax.jit
  def render(origins, directions):
    batch = {**inputs, "target_origins": origins[None], "target_directions": directions[None]}
    outputs = model.apply({"params": params}, batch, train=False,
                          rngs={"slots": jax.random.PRNGKey(seed)})
    return outputs["reconstruction"][0], outputs["masks"][0]

  images, masks = [], []
  for position, rotation in shapes_multiview.orbit_cameras(config.render.num_frames, distance,
                                                           elevation):
    origins, directions = shapes_multiview.pinhole_rays(position, rotation, height, width,
                                                        config.render.fov_deg)
    rgb, mask = render(origins.reshape(-1, 3), directions.reshape(-1, 3))
    images.append(np.clip(np.asarray(rgb), 0, 1).reshape(height, width, 3))
    masks.append(np.asarray(mask).reshape(height, width, -1))
  return np.stack(images), np.stack(masks)


def write_frames(images: np.ndarray, masks: np.ndarray, output_dir: str, scale: int) -> None:
  """Writes `frame_NNN.png` (rendering | mask overlay) and `orbit.gif`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from invariant_slots.lib import visualize  # pylint: disable=g-import-not-at-top

  os.makedirs(output_dir, exist_ok=True)
  frames = []
  for index, (image, mask) in enumerate(zip(images, masks)):
    pair = np.concatenate([image, visualize.mask_overlay(image, mask)], axis=1)
    pair = np.repeat(np.repeat(pair, scale, axis=0), scale, axis=1)
    frame = Image.fromarray(np.round(pair * 255).astype(np.uint8))
    frame.save(os.path.join(output_dir, f"frame_{index:03d}.png"))
    frames.append(frame)
  frames[0].save(os.path.join(output_dir, "orbit.gif"), save_all=True,
                 append_images=frames[1:], duration=100, loop=0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from invariant_slots.datasets import ops as preprocessing  # pylint: disable=g-import-not-at-top
  from invariant_slots.registry import ConfigError  # pylint: disable=g-import-not-at-top

  try:
    run = cli.load_multiview_run("render")
    if not 0 <= _SCENE.value < run.eval_size:
      raise ConfigError(f"--scene={_SCENE.value} is outside the {run.eval_size} eval scenes.")
    dataset = run.eval_data.skip(_SCENE.value).take(1).map(
        preprocessing.build_ops(run.config.data.preprocess_eval))
    example = next(dataset.as_numpy_iterator())
  except ConfigError as e:
    cli.fail(str(e))
  images, masks = render_orbit(run.config, run.params, run.model, example)
  write_frames(images, masks, cli.OUTPUT_DIR.value, _SCALE.value)
  print(f"Wrote {len(images)} frames of step {run.step} to {cli.OUTPUT_DIR.value}.")


if __name__ == "__main__":
  cli.use_flags("workdir", "config", "step", "output_dir")
  flags.mark_flags_as_required(["workdir", "output_dir"])
  app.run(main, flags_parser=cli.parse_flags)
