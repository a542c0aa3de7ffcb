"""`invariant_slots.sweep` and `invariant_slots.report`, run as users run them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from invariant_slots import report
from invariant_slots import sweep
from invariant_slots.registry import ConfigError
from tests.training_utils import REPO, SHAPES_CONFIG, TINY, child_env, read_scalars

TINY_SWEEP = {**TINY, "num_train_steps": 3, "eval_every_steps": 1, "checkpoint_every_steps": 3}


def test_grid_and_seeds_make_every_combination():
  grid = sweep.parse_grid(["model.corrector.name=SA,SA-ID", "learning_rate=1e-3,4e-4"])
  specs = sweep.run_specs([0, 1], grid)
  assert [s.name for s in specs[:3]] == ["name=SA,learning_rate=1e-3/seed0",
                                         "name=SA,learning_rate=1e-3/seed1",
                                         "name=SA,learning_rate=4e-4/seed0"]
  assert len(specs) == 8
  assert dict(specs[-1].overrides) == {"model.corrector.name": "SA-ID",
                                       "learning_rate": "4e-4", "seed": "1"}
  assert [s.name for s in sweep.run_specs([3], [])] == ["base/seed3"]
  with pytest.raises(ConfigError, match="is not KEY=V1,V2"):
    sweep.parse_grid(["model.corrector.name"])
  argv = sweep.command(specs[0], "c.py", "/w", ["--config.batch_size=8"], "launch/local.sh 2")
  assert argv == ["launch/local.sh", "2", "c.py", "/w", "--config.batch_size=8",
                  "--config.model.corrector.name=SA", "--config.learning_rate=1e-3",
                  "--config.seed=0"]


@pytest.fixture(scope="module")
def swept(shapes_data_dir, tmp_path_factory) -> tuple[str, subprocess.CompletedProcess, list]:
  """A two-seed sweep of the tiny shapes config, each run through launch/local.sh."""
  root = str(tmp_path_factory.mktemp("sweep"))
  flags = [f"--config={SHAPES_CONFIG}", f"--workdir={root}", "--seeds=0,1", "--parallel=2",
           "--launcher=bash launch/local.sh 1", f"--config.data.data_dir={shapes_data_dir}"]
  flags += [f"--config.{k}={v}" for k, v in TINY_SWEEP.items()]
  result = subprocess.run([sys.executable, "-m", "invariant_slots.sweep", *flags], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=900,
                          check=False)
  return root, result, flags


def test_the_sweep_trains_every_seed_and_resumes(swept):
  root, result, flags = swept
  assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
  summary = json.load(open(os.path.join(root, "summary.json")))
  assert [run["name"] for run in summary["runs"]] == ["base/seed0", "base/seed1"]
  for run in summary["runs"]:
    assert run["status"] == "trained" and run["step"] == 3
    saved = json.load(open(os.path.join(run["workdir"], "config.json")))
    assert saved["seed"] == run["seed"]
    assert run["eval"]["eval/fg_ari"] == pytest.approx(
        read_scalars(run["workdir"], "eval/fg_ari")[3])
  again = subprocess.run([sys.executable, "-m", "invariant_slots.sweep", *flags], cwd=REPO,
                         env=child_env(), capture_output=True, text=True, timeout=300,
                         check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished before, left as it is") == 2


def test_the_report_matches_the_event_files(swept, tmp_path):
  root, _, _ = swept
  output = tmp_path / "report"
  result = subprocess.run([sys.executable, "-m", "invariant_slots.report", root,
                           f"--output_dir={output}"], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  table = (output / "report.md").read_text()
  finals = [read_scalars(os.path.join(root, "base", f"seed{s}"), "eval/fg_ari")[3]
            for s in (0, 1)]
  bests = [max(read_scalars(os.path.join(root, "base", f"seed{s}"), "eval/fg_ari").values())
           for s in (0, 1)]
  row = [line for line in table.splitlines() if line.startswith("| base | fg_ari |")]
  assert row == [f"| base | fg_ari | {np.mean(finals):.4f} ± {np.std(finals, ddof=1):.4f} | "
                 f"{np.mean(bests):.4f} ± {np.std(bests, ddof=1):.4f} | 2 | 3 | "
                 + row[0].split("|")[-2].strip() + " |"]
  assert "| base | collapse/top_share |" in table
  curve = Image.open(output / "fg_ari.png")
  assert curve.size[0] > 100
  page = (output / "report.html").read_text()
  assert "<table>" in page and "fg_ari.png" in page
  images = [name for name in os.listdir(output) if name.startswith("image_")]
  assert images and all(Image.open(output / name).size[0] > 0 for name in images)
  assert any(f"src='{name}'" in page for name in images)


def test_report_errors_are_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "invariant_slots.report", str(tmp_path)],
                          cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: No TensorBoard events under {tmp_path}; has a run written its first log?"]
  with pytest.raises(ConfigError, match="not a directory"):
    report.find_workdirs([str(tmp_path / "missing")])
