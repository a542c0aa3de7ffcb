"""Runs a trained object-discovery model on images and videos and saves what the slots see.

    python -m invariant_slots.predict --workdir=/tmp/shapes --input=cat.png \
        --input=clip.gif --input=frames_dir/ --output_dir=/tmp/predictions

Loads `workdir/config.json` (written by the trainer) and the latest checkpoint
of a run of the "images" pipeline. Every input is a PNG/JPEG image, a GIF or a
folder of PNG/JPEG frames (sorted by name); frames are processed one by one.
For an input `NAME`, `OUTPUT/NAME/` receives (`.png` for an image, `.gif`
with one frame per input frame for a video):

  input             the model's input (after resizing)
  reconstruction    the decoded image
  mask_<k>          the decoder's alpha mask of slot k (white = 1)
  segmentation      the input overlaid with one colour per arg-max slot
  attention         corrector attention: a row per iteration, the input then
                    one column per slot (each map scaled to max 1)
  slots.npz         `slots [frames, num_slots, slot_size]`, `attention
                    [frames, num_iterations, num_slots, h, w]`, `masks
                    [frames, num_slots, H, W]`

Inputs of another size are resized to `config.data.resolution` with a warning.
Any PIL image mode is read as RGB: 16-bit grayscale ("I;16", "I") from its
full range [0, 65535], palette and CMYK through PIL's conversion, and images
with transparency (RGBA, LA, PA, palette with transparency) composited over
`--alpha_background` (black by default, like the backgrounds of the synthetic
training data; or white). Modes without one RGB reading (floating point
"F", integers beyond 16 bits) are refused with one line.
"""

import os
import sys
from typing import Sequence

import numpy as np
from absl import app
from absl import flags
from absl import logging
from PIL import Image
from PIL import ImageSequence

from invariant_slots import cli
from invariant_slots.lib import visualize
from invariant_slots.registry import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".gif",)
_FRAMES_PER_BATCH = 8
_GIF_FRAME_MS = 200
ALPHA_BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255)}
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

_INPUT = flags.DEFINE_multi_string("input", None, "Image, GIF or folder of frames; repeatable.")
_ALPHA_BACKGROUND = flags.DEFINE_enum(
    "alpha_background", "black", list(ALPHA_BACKGROUNDS),
    "Colour that transparent input pixels are composited over.")


def _open_image(path: str) -> Image.Image:
  try:
    image = Image.open(path)
    image.load()
  except (OSError, ValueError) as e:
    raise ConfigError(f"Cannot read image {path}: {e}") from None
  return image


def to_rgb(image: Image.Image, name: str, background: str = "black") -> np.ndarray:
  """A PIL image of any mode as uint8 `[H, W, 3]` (see the module docstring).

  Raises:
    ConfigError: a mode without one RGB reading.
  """
  mode = image.mode
  if mode.startswith("I"):  # "I;16", "I;16B", ... and 32-bit "I".
    values = np.asarray(image).astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
      raise ConfigError(f"{name} is a 32-bit integer image with values outside [0, 65535]; "
                        "save it as an 8- or 16-bit PNG.")
    gray = np.round(values / 257.0).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if mode == "F":
    raise ConfigError(f"{name} is a floating-point image, whose range is ambiguous; save it "
                      "as an 8- or 16-bit PNG.")
  if mode in _ALPHA_MODES or "transparency" in image.info:
    base = Image.new("RGBA", image.size, ALPHA_BACKGROUNDS[background] + (255,))
    return np.asarray(Image.alpha_composite(base, image.convert("RGBA")).convert("RGB"))
  try:
    return np.asarray(image.convert("RGB"))
  except ValueError as e:
    raise ConfigError(f"Cannot read {name} (PIL mode {mode}) as RGB: {e}.") from None


def read_frames(path: str, background: str = "black") -> tuple[np.ndarray, bool]:
  """Reads an input as uint8 `[frames, H, W, 3]` and whether it is a video.

  Transparent pixels are composited over `background` ("black" or "white").

  Raises:
    ConfigError: the path is missing, unreadable or of an unsupported kind.
  """
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
      raise ConfigError(f"Folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} frames.")
    frames = [to_rgb(_open_image(os.path.join(path, n)), os.path.join(path, n), background)
              for n in names]
    sizes = {frame.shape for frame in frames}
    if len(sizes) > 1:
      raise ConfigError(f"Frames in {path} differ in size: "
                        f"{sorted((w, h) for h, w, _ in sizes)}.")
    return np.stack(frames), True
  if not os.path.isfile(path):
    raise ConfigError(f"Input {path} does not exist.")
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
    raise ConfigError(f"Unsupported input {path}; use {', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)} "
                      "or a folder of frames.")
  image = _open_image(path)
  if suffix in VIDEO_SUFFIXES:
    frames = [to_rgb(frame, path, background) for frame in ImageSequence.Iterator(image)]
    return np.stack(frames), True
  return to_rgb(image, path, background)[None], False


def fit_resolution(frames: np.ndarray, resolution: Sequence[int], name: str) -> np.ndarray:
  """uint8 `[frames, h, w, 3]` -> float32 `[frames, H, W, 3]` in [0, 1], resized if needed."""
  height, width = resolution
  if frames.shape[1:3] != (height, width):
    logging.warning("%s is %dx%d; resizing to the model's %dx%d.", name, frames.shape[2],
                    frames.shape[1], width, height)
    print(f"warning: {name} is {frames.shape[2]}x{frames.shape[1]}; resized to {width}x{height}.",
          file=sys.stderr)
    frames = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BOX))
                       for f in frames])
  return frames.astype(np.float32) / 255.0


def _to_uint8(image: np.ndarray) -> np.ndarray:
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_frames(path_stem: str, frames: np.ndarray, video: bool) -> str:
  """Writes `[frames, H, W, C]` in [0, 1] as `stem.png` (one frame) or `stem.gif`."""
  frames = _to_uint8(frames)
  if frames.shape[-1] == 1:
    frames = frames[..., 0]
  images = [Image.fromarray(frame) for frame in frames]
  if not video:
    path = path_stem + ".png"
    images[0].save(path)
    return path
  path = path_stem + ".gif"
  images[0].save(path, save_all=True, append_images=images[1:], duration=_GIF_FRAME_MS, loop=0)
  return path


class Predictor:
  """The model and parameters of a run's checkpoint, applied to frames.

  `config` defaults to the run's saved config, `step` to its newest readable
  checkpoint.
  """

  def __init__(self, workdir: str, config=None, step: int | None = None):
    # Heavy imports here so flag errors and bad paths are reported quickly.
    self.config = config if config is not None else cli.saved_config(workdir)
    import jax  # pylint: disable=g-import-not-at-top
    from invariant_slots.lib import checkpointing  # pylint: disable=g-import-not-at-top
    from invariant_slots.lib import model_specs  # pylint: disable=g-import-not-at-top

    pipeline_name = self.config.get("pipeline", "images")
    if pipeline_name != "images":
      raise ConfigError(f"predict supports runs of the 'images' pipeline; {workdir} is a "
                        f"{pipeline_name!r} run.")
    self.step, self.params = checkpointing.load_params(workdir, self.config, step)
    self.model = model_specs.build_model(self.config)
    rng = jax.random.PRNGKey(self.config.seed + 1)
    self._apply = jax.jit(lambda params, image: self.model.apply(
        {"params": params}, {"image": image}, train=False, rngs={"slots": rng}))

  @property
  def resolution(self) -> tuple[int, int]:
    return tuple(self.config.data.resolution)

  def __call__(self, frames: np.ndarray) -> dict[str, np.ndarray]:
    """float32 `[frames, H, W, 3]` -> reconstruction, masks `[frames, K, H, W]`,
    slots and attention `[frames, T, K, h, w]`, as numpy arrays."""
    parts = []
    for start in range(0, len(frames), _FRAMES_PER_BATCH):
      chunk = frames[start:start + _FRAMES_PER_BATCH]
      # Padded to one batch shape, so the model compiles once.
      padded = np.zeros((_FRAMES_PER_BATCH,) + chunk.shape[1:], chunk.dtype)
      padded[:len(chunk)] = chunk
      outputs = self._apply(self.params, padded)
      parts.append({k: np.asarray(outputs[k])[:len(chunk)]
                    for k in ("reconstruction", "masks", "slots", "attention")})
    result = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    result["masks"] = result["masks"][..., 0]
    return result


def predict_input(predictor: Predictor, path: str, raw: np.ndarray, video: bool,
                  output_dir: str) -> list[str]:
  """Runs the model on the frames `raw` read from `path` and writes
  `output_dir/<name>/*`; returns the written paths."""
  name = os.path.basename(os.path.normpath(path))
  frames = fit_resolution(raw, predictor.resolution, name)
  outputs = predictor(frames)
  directory = os.path.join(output_dir, os.path.splitext(name)[0])
  os.makedirs(directory, exist_ok=True)
  stem = lambda part: os.path.join(directory, part)  # pylint: disable=unnecessary-lambda-assignment
  written = [
      save_frames(stem("input"), frames, video),
      save_frames(stem("reconstruction"), outputs["reconstruction"], video),
      save_frames(stem("segmentation"), visualize.segmentation_overlay(frames, outputs["masks"]), video),
      save_frames(stem("attention"), np.stack([
          visualize.attention_grid(frame, attention)
          for frame, attention in zip(frames, outputs["attention"])]), video),
  ]
  for k in range(outputs["masks"].shape[1]):
    written.append(save_frames(stem(f"mask_{k}"), outputs["masks"][:, k, ..., None], video))
  npz = stem("slots.npz")
  np.savez(npz, slots=outputs["slots"], attention=outputs["attention"], masks=outputs["masks"])
  written.append(npz)
  return written


def run(workdir: str, inputs: Sequence[str], output_dir: str,
        predictor: Predictor | None = None, background: str = "black",
        config=None, step: int | None = None) -> list[str]:
  """Predicts every input with the run in `workdir` (`config` and `step` as in
  `Predictor`), or an already loaded `predictor` of it; returns the written paths."""
  # Fail before the slow model load.
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ConfigError(f"--output_dir {output_dir} is a file; pass a directory.")
  loaded = [(path, *read_frames(path, background)) for path in inputs]
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"Cannot create --output_dir {output_dir} ({e.strerror}).") from None
  predictor = predictor or Predictor(workdir, config, step)
  written = []
  for path, raw, video in loaded:
    written += predict_input(predictor, path, raw, video, output_dir)
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    written = run(cli.WORKDIR.value, _INPUT.value, cli.OUTPUT_DIR.value,
                  background=_ALPHA_BACKGROUND.value, config=cli.run_config(cli.WORKDIR.value),
                  step=cli.STEP.value)
  except ConfigError as e:
    cli.fail(str(e))
  print(f"Wrote {len(written)} files to {cli.OUTPUT_DIR.value}.")


if __name__ == "__main__":
  cli.use_flags("workdir", "config", "step", "output_dir")
  flags.mark_flags_as_required(["workdir", "input", "output_dir"])
  app.run(main, flags_parser=cli.parse_flags)
