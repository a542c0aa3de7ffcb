"""Fault injection: every bad input or interruption ends in one line, and no checkpoint is lost.

Each case runs what a careless user would run (`invariant_slots.main`,
`predict`, `analyze`) against a tiny shapes run trained once per module, and
checks the exit status, a single `error:` line without a traceback, and that
the checkpoints are intact. The cases that need no command line (image modes,
the second Ctrl-C, the dataset-generation race) call the code directly.
"""

import asyncio
import glob
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from invariant_slots import predict
from invariant_slots.datasets import movi
from invariant_slots.datasets import multi_object
from invariant_slots.datasets import shapes
from invariant_slots.lib import checkpointing
from invariant_slots import config_files
from invariant_slots.lib import input_pipeline
from invariant_slots.lib import trainer
from invariant_slots.lib import workdir_lock
from invariant_slots.registry import ConfigError
from tests.training_utils import (REPO, SHAPES_CONFIG, child_env, read_scalars,
                                  train_and_evaluate)

# The reproduction settings on a 64-scene dataset, with a checkpoint
# after every step so that one run leaves four to damage.
SETTINGS = {
    "num_train_steps": 4, "batch_size": 4, "eval_every_steps": 4, "log_loss_every_steps": 1,
    "checkpoint_every_steps": 1, "checkpoints_to_keep": 4, "warmup_steps": 2,
    "num_eval_images": 2, "data.shapes.num_train": 64, "data.shapes.num_validation": 16,
    "data.shuffle_buffer_size": 64,
}
KILLS = 2  # kill -9 rounds during checkpoint writes before the run may finish.
DATA_STATE = os.path.join("data_state", "1_processes", "process_0")


def main_args(data_dir: str, workdir: str, **overrides) -> list[str]:
  """Arguments of `python -m invariant_slots.main` for the tiny run with `overrides`."""
  options = {**SETTINGS, "data.data_dir": data_dir, **overrides}
  return (["-m", "invariant_slots.main", f"--config={SHAPES_CONFIG}", f"--workdir={workdir}"]
          + [f"--config.{key}={value}" for key, value in options.items()])


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(), capture_output=True,
                        text=True, timeout=timeout, check=False)


def assert_one_error(result: subprocess.CompletedProcess, *fragments: str,
                     status: int = 2) -> str:
  """Checks the exit status and a single `error:` line holding `fragments`; returns it."""
  output = result.stdout + result.stderr
  assert "Traceback" not in output, output[-4000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, output[-4000:]
  assert result.returncode == status, output[-4000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


def snapshot(workdir: str) -> dict[str, bytes]:
  """The bytes of every checkpoint and data-position file, and of config.json."""
  files = {}
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, workdir)
      if relative.startswith(("checkpoints", "data_state")) or relative == "config.json":
        with open(path, "rb") as f:
          files[relative] = f.read()
  return files


def assert_intact(before: dict[str, bytes], workdir: str) -> None:
  after = snapshot(workdir)
  changed = [path for path, content in before.items() if after.get(path) != content]
  assert not changed, changed


def steps(workdir: str) -> list[int]:
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA cache for this module's child processes: the many runs
  of one tiny config compile each program once."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("xla_cache")))
    patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    patch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_data_dir) -> str:
  """One uninterrupted run of `SETTINGS`: checkpoints 1-4, losses of steps 1-4."""
  workdir = str(tmp_path_factory.mktemp("faults") / "run")
  result = run(main_args(shapes_data_dir, workdir))
  assert result.returncode == 0, result.stderr[-4000:]
  assert steps(workdir) == [1, 2, 3, 4]
  return workdir


@pytest.fixture
def copy_run(trained, tmp_path):
  """`copy_run()` -> a copy of the trained run without its event files and lock."""

  def make(name: str = "run") -> str:
    target = str(tmp_path / name)
    shutil.copytree(trained, target, ignore=shutil.ignore_patterns("events.*", ".lock"))
    return target

  return make


# ------------------------------------------------ refused before any start-up


@pytest.mark.parametrize("overrides, message", [
    ({"checkpoints_to_keep": 0}, "checkpoints_to_keep must be >= 1, got 0"),
    ({"learning_rate": -0.001}, "learning_rate must be > 0, got -0.001"),
    ({"checkpoint_every_steps": 0}, "checkpoint_every_steps must be >= 1, got 0"),
    ({"eval_every_steps": 0}, "eval_every_steps must be >= 1, got 0"),
    ({"model.slot_size": 0}, "model.slot_size must be >= 1, got 0"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"num_train_steps": 2}, "num_train_steps=2 is below step 4 of the latest checkpoint"),
])
def test_values_that_make_no_sense_are_refused_at_once(trained, shapes_data_dir, overrides,
                                                       message):
  before = snapshot(trained)
  start = time.time()
  assert_one_error(run(main_args(shapes_data_dir, trained, **overrides)), message)
  assert time.time() - start < 10  # Answered before TensorFlow and JAX start.
  assert_intact(before, trained)


@pytest.mark.parametrize("args, message", [
    (["--config.no_such=1"], "Unknown config key 'no_such'; did you mean '"),
    (["--config.model.slot_sise=8"], "Unknown config key 'model.slot_sise'; did you mean "
                                     "'model.slot_size'?"),
    (["--config=configs/no_such.py"], "Config file configs/no_such.py does not exist"),
])
def test_unknown_keys_and_config_files_get_one_line(tmp_path, args, message):
  assert_one_error(run(["-m", "invariant_slots.main", f"--workdir={tmp_path / 'w'}",
                        *(args if args[0].startswith("--config=") else
                          [f"--config={SHAPES_CONFIG}", *args])]), message)


def test_zero_steps_on_an_empty_workdir_says_there_is_no_checkpoint(tmp_path, shapes_data_dir):
  workdir = tmp_path / "empty"
  assert_one_error(run(main_args(shapes_data_dir, str(workdir), num_train_steps=0)),
                   "num_train_steps=0 evaluates the latest checkpoint", "has none")
  assert not (workdir / "checkpoints").exists()


def test_a_workdir_that_is_a_file_or_read_only_is_refused(copy_run, tmp_path, shapes_data_dir):
  a_file = tmp_path / "file"
  a_file.write_text("")
  assert_one_error(run(main_args(shapes_data_dir, str(a_file))), "is a file, not a directory")
  workdir = copy_run()
  before = snapshot(workdir)
  # root ignores permission bits, but not the immutable attribute.
  if os.geteuid() == 0:
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", workdir]).returncode:
      pytest.skip("cannot make a directory read-only for root here")
    undo = ["chattr", "-i", workdir]
  else:
    os.chmod(workdir, 0o555)
    undo = ["chmod", "755", workdir]
  try:
    # Evaluation only still writes metrics, so it is refused too.
    assert_one_error(run(main_args(shapes_data_dir, workdir, num_train_steps=0)),
                     "is not writable")
  finally:
    subprocess.run(undo, check=True)
  assert_intact(before, workdir)


# ------------------------------------------------------------------- the lock


def test_a_second_run_on_a_locked_workdir_names_the_holder(trained, shapes_data_dir):
  before = snapshot(trained)
  with workdir_lock.hold(trained):
    result = run(main_args(shapes_data_dir, trained, num_train_steps=8))
  assert_one_error(result, "is in use by another run",
                   f"pid {os.getpid()} on host {socket.gethostname()}")
  assert_intact(before, trained)


def test_the_lock_dies_with_its_holder(tmp_path):
  script = ("import sys, time\nfrom invariant_slots.lib import workdir_lock\n"
            "with workdir_lock.hold(sys.argv[1]):\n  print('held', flush=True)\n  time.sleep(600)")
  holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                            env=child_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {holder.pid} on host"):
      with workdir_lock.hold(str(tmp_path)):
        pass
  finally:
    holder.kill()  # SIGKILL: no chance to clean up.
    holder.wait()
  with workdir_lock.hold(str(tmp_path)):
    pass


def test_concurrent_dataset_generation_reuses_the_winner(tmp_path):
  config = shapes.ShapesConfig(name="race", resolution=32, min_objects=2, max_objects=2,
                               num_train=8, num_validation=4)
  winner = shapes.Shapes(config=config, data_dir=str(tmp_path))
  loser = shapes.Shapes(config=config, data_dir=str(tmp_path))
  generate = loser._download_and_prepare  # pylint: disable=protected-access

  def finish_the_winner_first(*args, **kwargs):
    winner.download_and_prepare()  # Lands while the loser is still generating.
    return generate(*args, **kwargs)

  loser._download_and_prepare = finish_the_winner_first  # pylint: disable=protected-access
  loser.download_and_prepare()  # Its rename fails: it takes the winner's data.
  assert loser.is_prepared()
  assert len(list(loser.as_dataset(split="train"))) == 8
  assert not glob.glob(str(tmp_path / "**" / "*incomplete*"), recursive=True)


# ------------------------------------------------------------- interruptions


def _wait_for(predicate, timeout: float = 240) -> None:
  end = time.time() + timeout
  while not predicate():
    assert time.time() < end, "timed out"
    time.sleep(0.2)


def test_ctrl_c_checkpoints_the_step_and_exits_130(copy_run, shapes_data_dir, tmp_path):
  workdir = copy_run()
  long_run = main_args(shapes_data_dir, workdir, num_train_steps=100_000,
                       checkpoint_every_steps=100_000, eval_every_steps=100_000)
  stderr_path = tmp_path / "stderr"
  with open(stderr_path, "w") as stderr:
    child = subprocess.Popen([sys.executable, *long_run], cwd=REPO, env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=stderr)
  try:
    _wait_for(lambda: re.search(r"\[\d+\] train/", stderr_path.read_text()))
    # While it trains, a second run on its workdir stops at once, naming it.
    assert_one_error(run(main_args(shapes_data_dir, workdir, num_train_steps=8)),
                     f"pid {child.pid} on host {socket.gethostname()}")
    child.send_signal(signal.SIGINT)
    status = child.wait(timeout=240)
  finally:
    child.kill()
  result = subprocess.CompletedProcess(child.args, status, "", stderr_path.read_text())
  line = assert_one_error(result, "Interrupted; step", "is checkpointed", status=130)
  step = int(re.search(r"step (\d+) is checkpointed", line).group(1))
  assert step > 4 and steps(workdir) == [1, 2, 3, 4, step]


def test_a_second_ctrl_c_exits_at_once(monkeypatch, capsys):
  exits = []
  monkeypatch.setattr(os, "_exit", exits.append)
  preemption = trainer._Preemption()  # pylint: disable=protected-access
  try:
    os.kill(os.getpid(), signal.SIGINT)
    _wait_for(lambda: preemption.signal == signal.SIGINT, timeout=10)
    assert not exits  # The first one only asks for a checkpoint.
    os.kill(os.getpid(), signal.SIGINT)
    _wait_for(lambda: exits, timeout=10)
  finally:
    preemption.restore()
  assert exits == [130]
  assert capsys.readouterr().err.strip() == (
      "error: Interrupted again; exiting at once. The last checkpoint is kept.")


def test_kill_9_during_checkpoint_writes_resumes_with_the_same_losses(trained, shapes_data_dir,
                                                                      tmp_path):
  workdir = str(tmp_path / "killed")
  checkpoints = os.path.join(workdir, "checkpoints")
  data_state = os.path.join(workdir, DATA_STATE)
  def listing(path: str) -> set[str]:
    return set(os.listdir(path)) if os.path.isdir(path) else set()

  def writing(kill: int, before: set[str]) -> bool:
    """Whether kill `kill`'s moment has come: even kills strike as the data
    position is written, odd ones in the state write (an orbax temporary
    folder) or, if that was too quick to see, right after it."""
    if kill % 2 == 0:
      return bool(listing(data_state) - before)
    return bool({n for n in listing(checkpoints) - before
                 if ".orbax-checkpoint-tmp" in n or n.isdigit()})

  kills = 0
  while True:
    before = listing(checkpoints) | listing(data_state)
    child = subprocess.Popen([sys.executable, *main_args(shapes_data_dir, workdir)], cwd=REPO,
                             env=child_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    while child.poll() is None and not (kills < KILLS and writing(kills, before)):
      time.sleep(0.005)
    if child.poll() is None:
      child.kill()  # SIGKILL in the middle of a checkpoint write.
      child.wait()
      kills += 1
      continue
    assert child.returncode == 0
    break
  assert kills == KILLS
  assert steps(workdir) == [1, 2, 3, 4]
  assert not glob.glob(os.path.join(data_state, "*_temp*"))
  expected, actual = read_scalars(trained, "train/loss"), read_scalars(workdir, "train/loss")
  assert sorted(actual) == sorted(expected) == [1, 2, 3, 4]
  np.testing.assert_allclose([actual[s] for s in range(1, 5)],
                             [expected[s] for s in range(1, 5)], rtol=1e-6)


# --------------------------------------------------------- resuming, fallback


def test_resuming_with_another_model_is_refused(copy_run, shapes_data_dir):
  workdir = copy_run()
  before = snapshot(workdir)
  line = assert_one_error(
      run(main_args(shapes_data_dir, workdir, num_train_steps=6, **{"model.num_slots": 5})),
      "does not fit this config", "model.num_slots 4 -> 5", "another --workdir")
  assert "strict" not in line
  assert_intact(before, workdir)  # config.json included.


def test_resuming_with_another_slot_size_is_refused(copy_run, shapes_data_dir):
  workdir = copy_run()
  before = snapshot(workdir)
  config = config_files.load_config(SHAPES_CONFIG, **{
      **SETTINGS, "data.data_dir": shapes_data_dir, "num_train_steps": 6,
      "model.slot_size": 32})
  with pytest.raises(ConfigError, match=r"does not fit this config: params/\S+ is \([\d, ]+\) "
                                        r"in the checkpoint, \([\d, ]+\) now.*"
                                        r"model\.slot_size 64 -> 32"):
    train_and_evaluate(config, workdir)
  assert_intact(before, workdir)


def test_resuming_with_another_batch_size_changes_only_the_data_order(copy_run,
                                                                      shapes_data_dir):
  workdir = copy_run()
  before = snapshot(workdir)
  del before["config.json"]
  # What a run killed in mid-write leaves behind.
  leftovers = [os.path.join(workdir, "checkpoints", "5.orbax-checkpoint-tmp-1700000000"),
               os.path.join(workdir, DATA_STATE, "ckpt-5_temp")]
  for path in leftovers:
    os.makedirs(path)
  result = run(main_args(shapes_data_dir, workdir, batch_size=8, num_train_steps=6,
                         checkpoints_to_keep=1))
  assert result.returncode == 0, result.stderr[-4000:]
  assert "Traceback" not in result.stderr
  assert re.search(r"batch_size 4 -> 8.*only the data order changes", result.stderr)
  assert not any(os.path.exists(path) for path in leftovers)
  # The earlier run's checkpoints stay; of its own, this run keeps the newest.
  assert steps(workdir) == [1, 2, 3, 4, 6]
  assert_intact(before, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["batch_size"] == 8


def _damage(workdir: str) -> None:
  """Step 4: a truncated array file; step 3: no _METADATA; step 2: a damaged data position."""
  arrays = [p for p in glob.glob(os.path.join(workdir, "checkpoints", "4", "**", "*"),
                                 recursive=True) if os.path.isfile(p)]
  largest = max(arrays, key=os.path.getsize)
  os.truncate(largest, os.path.getsize(largest) // 2)
  os.remove(os.path.join(workdir, "checkpoints", "3", "default", "_METADATA"))
  with open(os.path.join(workdir, DATA_STATE, "ckpt-2.index"), "r+b") as f:
    f.truncate(os.path.getsize(f.name) // 2)


def test_unreadable_checkpoints_fall_back_to_the_newest_good_one(trained, copy_run,
                                                                 shapes_data_dir):
  workdir = copy_run()
  _damage(workdir)
  result = run(main_args(shapes_data_dir, workdir))
  assert result.returncode == 0, result.stderr[-4000:]
  assert "Traceback" not in result.stderr, result.stderr[-4000:]
  assert "error:" not in result.stderr
  for step in (4, 3, 2):
    assert re.search(rf"Skipping the checkpoint at step {step} in .*, which cannot be restored "
                     r"\(.*\); trying the previous one\.", result.stderr), result.stderr[-4000:]
  assert steps(workdir) == [1, 2, 3, 4]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints_unreadable"))) == ["2", "3", "4"]
  # Resumed from step 1 and its data position: the uninterrupted run's losses.
  expected, actual = read_scalars(trained, "train/loss"), read_scalars(workdir, "train/loss")
  assert sorted(actual) == [2, 3, 4]
  np.testing.assert_allclose([actual[s] for s in (2, 3, 4)], [expected[s] for s in (2, 3, 4)],
                             rtol=1e-6)


def test_echoes_of_a_failed_read_stay_out_of_the_log(monkeypatch):
  unraisable = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(str(u.exc_value)))
  records = []
  collector = logging.Handler()
  collector.emit = records.append
  asyncio_logger = logging.getLogger("asyncio")
  asyncio_logger.addHandler(collector)
  closed_loop = asyncio.new_event_loop()
  closed_loop.close()

  class LateCallback:
    """Calls into the closed loop when collected, as tensorstore's callbacks do."""

    def __init__(self, error=None):
      self.error = error

    def __del__(self):
      if self.error:
        raise self.error
      closed_loop.call_soon_threadsafe(print)

  def log_error(error: Exception) -> None:
    try:
      raise error
    except Exception:  # pylint: disable=broad-except
      asyncio_logger.exception("Task exception was never retrieved")

  try:
    checkpointing.silence_failed_read_echoes()
    checkpointing.silence_failed_read_echoes()
    LateCallback()
    LateCallback(ValueError("an unrelated failure"))
    echo = Exception("Encountered error while reading array index: (slice(0, 4, 1),)")
    echo.__cause__ = ValueError("truncated file")
    log_error(echo)
    log_error(KeyError("an unrelated key"))
  finally:
    for logger in ("asyncio", "absl", ""):
      logging.getLogger(logger).removeFilter(checkpointing._drop_failed_read_records)  # pylint: disable=protected-access
    asyncio_logger.removeHandler(collector)
  assert unraisable == ["an unrelated failure"]
  assert [str(r.exc_info[1]) for r in records] == ["'an unrelated key'"]


def test_a_diverged_update_is_never_saved(tmp_path, shapes_data_dir):
  workdir = str(tmp_path / "diverged")
  # Warm-up makes step 1's update zero; step 2's update sends the parameters to ~1e29.
  assert_one_error(run(main_args(shapes_data_dir, workdir, learning_rate=1e30,
                                 lr_schedule="constant")),
                   "The state after step 2 has non-finite", "last good checkpoint (step 1)")
  assert steps(workdir) == [1]
  state = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "1", "default"))
  leaves = [np.asarray(x) for x in jax.tree.leaves((state["params"], state["opt_state"]))]
  assert all(np.all(np.isfinite(x)) for x in leaves)
  assert max(float(np.abs(x).max()) for x in jax.tree.leaves(state["params"])) < 100


# ------------------------------------------------------------------ bad data


def test_a_tfrecord_of_random_bytes_names_the_file_and_record(tmp_path):
  path = tmp_path / "tetrominoes_train.tfrecords"
  path.write_bytes(np.random.default_rng(0).bytes(5000))
  result = run(["-m", "invariant_slots.main", "--config=configs/tetrominoes.py",
                f"--workdir={tmp_path / 'w'}", f"--config.data.path={path}",
                "--config.num_train_steps=2", "--config.batch_size=4"])
  assert_one_error(result, f"{path}: record 0 is unreadable",
                   "gs://multi-object-datasets/tetrominoes")


def test_a_truncated_gzip_tfrecord_names_the_file_and_record(tmp_path):
  path = str(tmp_path / "tetrominoes_train.tfrecords")
  rng = np.random.default_rng(0)
  multi_object.write_examples("tetrominoes", path,
                              [multi_object.random_example("tetrominoes", rng) for _ in range(8)])
  os.truncate(path, os.path.getsize(path) * 2 // 3)
  config = config_files.load_config(os.path.join(REPO, "configs", "tetrominoes.py"),
                                       **{"data.path": path})
  with pytest.raises(ConfigError) as error:
    with input_pipeline.naming_data_errors(config):
      for _ in multi_object.load("tetrominoes", path):
        pass
  message = str(error.value)
  record = re.search(rf"{re.escape(path)}: record (\d+) is unreadable", message)
  assert record and 0 < int(record.group(1)) < 8, message
  assert "gs://multi-object-datasets/tetrominoes" in message and "\n" not in message


def test_missing_movi_says_where_the_data_lives(tmp_path):
  with pytest.raises(ConfigError, match="published at gs://kubric-public/tfds"):
    movi.movi_builder("movi_c/128x128:1.0.0", str(tmp_path))


# -------------------------------------------------------- predict and tools


@pytest.mark.parametrize("mode, make, expected", [
    ("I;16", lambda: Image.fromarray(np.full((4, 4), 65535, np.uint16)), 255),
    ("I;16", lambda: Image.fromarray(np.full((4, 4), 257 * 100, np.uint16)), 100),
    ("I", lambda: Image.fromarray(np.full((4, 4), 257 * 60, np.int32)), 60),
    ("1", lambda: Image.new("1", (4, 4), 1), 255),
    ("L", lambda: Image.new("L", (4, 4), 77), 77),
    ("LA", lambda: Image.new("LA", (4, 4), (200, 0)), 0),
    ("P", lambda: Image.new("RGB", (4, 4), (10, 10, 10)).convert("P", palette=Image.ADAPTIVE),
     10),
    ("CMYK", lambda: Image.new("CMYK", (4, 4), (0, 0, 0, 255)), 0),
    ("RGBA", lambda: Image.new("RGBA", (4, 4), (255, 255, 255, 0)), 0),
])
def test_predict_reads_every_image_mode(mode, make, expected):
  image = make()
  assert image.mode == mode
  rgb = predict.to_rgb(image, "image")
  assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb, expected)


def test_predict_reads_a_16_bit_png_from_its_full_range(tmp_path):
  path = str(tmp_path / "gray16.png")
  Image.fromarray(np.array([[0, 257 * 128], [257 * 200, 65535]], np.uint16)).save(path)
  frames, video = predict.read_frames(path)
  assert frames.shape == (1, 2, 2, 3) and not video
  np.testing.assert_array_equal(frames[0, ..., 0], [[0, 128], [200, 255]])


def test_predict_composites_transparency_over_the_chosen_background(tmp_path):
  pixels = np.zeros((2, 2, 4), np.uint8)
  pixels[0, 0] = (255, 0, 0, 255)  # Opaque red; the rest fully transparent.
  pixels[1, 1] = (0, 0, 255, 128)  # Half-transparent blue.
  path = str(tmp_path / "rgba.png")
  Image.fromarray(pixels, "RGBA").save(path)
  black = predict.read_frames(path, "black")[0][0]
  white = predict.read_frames(path, "white")[0][0]
  np.testing.assert_array_equal(black[0, 0], white[0, 0])
  np.testing.assert_array_equal(black[0, 1], 0)
  np.testing.assert_array_equal(white[0, 1], 255)
  np.testing.assert_allclose(black[1, 1], (0, 0, 128), atol=1)
  np.testing.assert_allclose(white[1, 1], (127, 127, 255), atol=1)


def test_predict_refuses_modes_without_one_rgb_reading(tmp_path):
  path = str(tmp_path / "float.tiff")
  Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
  with pytest.raises(ConfigError, match="floating-point image"):
    predict.to_rgb(Image.open(path), path)


def test_predict_command_errors_are_one_line(trained, tmp_path):
  image = str(tmp_path / "in.png")
  Image.new("RGB", (32, 32)).save(image)
  truncated = tmp_path / "truncated"
  truncated.mkdir()
  with open(os.path.join(trained, "config.json")) as f:
    (truncated / "config.json").write_text(f.read()[:100])
  an_output_file = tmp_path / "out.png"
  an_output_file.write_text("")
  for workdir, output, message in [
      (str(truncated), str(tmp_path / "out"), "config.json is damaged"),
      (trained, str(an_output_file), "is a file; pass a directory")]:
    assert_one_error(run(["-m", "invariant_slots.predict", f"--workdir={workdir}",
                          f"--input={image}", f"--output_dir={output}"]), message)


def test_predict_with_only_unreadable_checkpoints_is_one_line(copy_run, tmp_path):
  workdir = copy_run()
  for step in (1, 2, 3, 4):
    os.remove(os.path.join(workdir, "checkpoints", str(step), "default", "_METADATA"))
  before = snapshot(workdir)
  image = str(tmp_path / "in.png")
  Image.new("RGB", (32, 32)).save(image)
  result = run(["-m", "invariant_slots.predict", f"--workdir={workdir}", f"--input={image}",
                f"--output_dir={tmp_path / 'out'}"])
  assert_one_error(result, "None of the checkpoints", "steps 1, 2, 3, 4")
  assert len(re.findall(r"Skipping the checkpoint at step \d", result.stderr)) == 4
  assert_intact(before, workdir)  # predict changes nothing in the run.
  assert not os.path.exists(os.path.join(workdir, "checkpoints_unreadable"))


def test_tools_do_not_create_checkpoints_on_a_mistyped_workdir(tmp_path):
  typo = tmp_path / "tpyo"
  assert_one_error(run(["-m", "invariant_slots.analyze", f"--config={SHAPES_CONFIG}",
                        f"--workdir={typo}"]), "No checkpoint in")
  # render opens its checkpoints the same way.
  with pytest.raises(ConfigError, match="No checkpoint in"):
    checkpointing.Checkpointer(str(typo), read_only=True)
  assert not typo.exists()
