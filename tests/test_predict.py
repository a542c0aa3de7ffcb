"""`invariant_slots.predict` on images, GIFs and frame folders from a tiny trained run."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from invariant_slots import predict
from invariant_slots.datasets import shapes
from invariant_slots.registry import ConfigError
from tests import training_utils

NUM_SLOTS = 4  # configs/shapes.py


@pytest.fixture(scope="module")
def run_dir(shapes_data_dir, tmp_path_factory) -> str:
  """A 1-step run of the tiny shapes config (32x32, 4 slots), checkpointed."""
  workdir = str(tmp_path_factory.mktemp("predict_run"))
  training_utils.train_and_evaluate(
      training_utils.tiny_config(shapes_data_dir, num_train_steps=1), workdir)
  return workdir


@pytest.fixture(scope="module")
def predictor(run_dir) -> predict.Predictor:
  return predict.Predictor(run_dir)


def _scene(index: int, resolution: int = 32) -> np.ndarray:
  config = shapes.ShapesConfig(name="p", resolution=resolution, min_objects=3, max_objects=3,
                               num_train=1, num_validation=1)
  return shapes.generate_example(config, "train", index)["image"]


def _expected_files(video: bool) -> set[str]:
  suffix = ".gif" if video else ".png"
  names = ["input", "reconstruction", "segmentation", "attention"]
  names += [f"mask_{k}" for k in range(NUM_SLOTS)]
  return {name + suffix for name in names} | {"slots.npz"}


def test_png_and_gif_write_every_file(run_dir, predictor, tmp_path):
  png = tmp_path / "scene.png"
  Image.fromarray(_scene(0)).save(png)
  gif = tmp_path / "clip.gif"
  frames = [Image.fromarray(_scene(i)) for i in range(3)]
  frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
  out = tmp_path / "out"
  written = predict.run(run_dir, [str(png), str(gif)], str(out), predictor)
  assert set(os.listdir(out / "scene")) == _expected_files(video=False)
  assert set(os.listdir(out / "clip")) == _expected_files(video=True)
  assert len(written) == 2 * len(_expected_files(False))

  image = np.load(out / "scene" / "slots.npz")
  assert image["slots"].shape[:2] == (1, NUM_SLOTS)
  np.testing.assert_allclose(image["masks"].sum(axis=1), 1.0, atol=1e-4)  # Softmax over slots.
  video = np.load(out / "clip" / "slots.npz")
  assert video["slots"].shape[:2] == (3, NUM_SLOTS)
  num_iterations = video["attention"].shape[1]
  assert num_iterations == 3
  with Image.open(out / "clip" / "attention.gif") as grid:
    assert grid.n_frames == 3
    # One row per iteration, the input and one column per slot.
    assert grid.size == ((NUM_SLOTS + 1) * 32, num_iterations * 32)
  with Image.open(out / "scene" / "mask_0.png") as mask:
    assert mask.size == (32, 32)
  # The same frame gives the same slots alone and inside a video.
  np.testing.assert_allclose(video["slots"][0], image["slots"][0], atol=1e-4)


def test_other_sizes_are_resized_with_a_warning(run_dir, predictor, tmp_path, capsys):
  folder = tmp_path / "frames"
  folder.mkdir()
  for i in range(2):
    Image.fromarray(_scene(i, resolution=64)).save(folder / f"{i:03d}.png")
  predict.run(run_dir, [str(folder)], str(tmp_path / "out"), predictor)
  assert "resized to 32x32" in capsys.readouterr().err
  assert set(os.listdir(tmp_path / "out" / "frames")) == _expected_files(video=True)


def test_bad_inputs_give_one_line_errors(run_dir, tmp_path):
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"not a png")
  with pytest.raises(ConfigError, match="Cannot read image"):
    predict.run(run_dir, [str(broken)], str(tmp_path / "out"))
  with pytest.raises(ConfigError, match="does not exist"):
    predict.run(run_dir, [str(tmp_path / "missing.png")], str(tmp_path / "out"))
  png = tmp_path / "ok.png"
  Image.fromarray(_scene(0)).save(png)
  empty = tmp_path / "empty_run"
  empty.mkdir()
  (empty / "config.json").write_text(open(os.path.join(run_dir, "config.json")).read())
  with pytest.raises(ConfigError, match="No checkpoint in"):
    predict.run(str(empty), [str(png)], str(tmp_path / "out"))


def test_cli_reports_missing_config(tmp_path):
  png = tmp_path / "ok.png"
  Image.fromarray(_scene(0)).save(png)
  result = subprocess.run(
      [sys.executable, "-m", "invariant_slots.predict", f"--workdir={tmp_path}",
       f"--input={png}", f"--output_dir={tmp_path / 'out'}"],
      cwd=training_utils.REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: No config.json in {tmp_path}; pass the --workdir of a training run.")
