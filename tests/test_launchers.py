"""The cluster launchers, run as users run them, with stand-ins for `srun`, `gcloud` and `pip`.

The stand-ins run the exact commands the launchers produce as real local
processes: `srun` starts `SLURM_NTASKS` tasks with the variables SLURM sets,
`gcloud ... ssh --worker=all --command CMD` runs CMD in one home directory
per worker (the TPU workers' auto-detection is played by the same SLURM
variables, so that `--distributed` forms a real 2-process job), and `pip`
records its arguments. Each launcher trains the tiny shapes run twice: from a
config file without overrides, then resumed with one.
"""

import os
import random
import shlex
import stat
import subprocess
import sys

import pytest

from tests.training_utils import REPO, TINY

NUM_TASKS = 2

def _tasks(command: str) -> str:
  """Bash lines that run `command` once per task (`$i`) in the background, then
  exit with the first failure's status."""
  return f"""pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  {command}
  pids+=($!)
done
status=0
for pid in "${{pids[@]}}"; do wait "$pid" || status=$?; done
exit $status
"""


SRUN = """#!/usr/bin/env bash
# srun stand-in: SLURM_NTASKS tasks of the command on this machine.
while [[ $1 == --* ]]; do shift; done
echo "srun $*" >> "$SHIM_LOG"
""" + _tasks('SLURM_PROCID=$i SLURM_LOCALID=$i "$@" > "$SHIM_LOG.task$i" 2>&1 &')

GCLOUD = """#!/usr/bin/env bash
# gcloud stand-in: no slice exists, create succeeds, ssh --worker=all runs the
# command in one home directory per worker.
echo "gcloud $*" >> "$SHIM_LOG"
case "$4" in
  describe) exit 1 ;;
  create) exit 0 ;;
  ssh) ;;
  *) echo "unexpected gcloud call: $*" >&2; exit 3 ;;
esac
command=""
while [[ $# -gt 0 ]]; do
  if [[ $1 == --command ]]; then command=$2; fi
  shift
done
""" + _tasks('mkdir -p "$SHIM_HOME/worker_$i"\n  (cd "$SHIM_HOME/worker_$i" && SLURM_PROCID=$i '
             'SLURM_LOCALID=0 bash -c "$command") >> "$SHIM_LOG.task$i" 2>&1 &')

PIP = """#!/usr/bin/env bash
echo "pip $*" >> "$SHIM_LOG"
"""


def _tiny_config_file(tmp_path, data_dir: str, **overrides) -> str:
  """A config file: `configs/shapes.py` (relative to the working directory) made tiny."""
  options = {**TINY, "data.data_dir": data_dir, "num_train_steps": 1,
             "checkpoint_every_steps": 1, **overrides}
  path = tmp_path / "tiny_config.py"
  path.write_text("from invariant_slots import config_files\n\n\n"
                  "def get_config():\n"
                  f"  return config_files.load_config('configs/shapes.py', **{options!r})\n")
  return str(path)


@pytest.fixture
def shims(tmp_path):
  """PATH with the stand-ins (and this interpreter as `python`); the log they write."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name, text in (("srun", SRUN), ("gcloud", GCLOUD), ("pip", PIP)):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(stat.S_IRWXU)
  (bin_dir / "python").symlink_to(sys.executable)
  log = tmp_path / "shim.log"
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SHIM_LOG=str(log),
             SHIM_HOME=str(tmp_path / "workers"), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1",
             SLURM_NTASKS=str(NUM_TASKS),
             SLURM_STEP_NODELIST="localhost", PYTHONPATH="")
  return env, log


def _run(command: list[str], env: dict[str, str], log) -> str:
  """Runs a launcher; returns every task's output after checking the exit status."""
  for i in range(NUM_TASKS):
    if os.path.exists(f"{log}.task{i}"):
      os.remove(f"{log}.task{i}")
  # A new job id for each job: the coordinator's port is derived from it.
  env = dict(env, SLURM_JOB_ID=str(random.randrange(1, 1 << 30)))
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  tasks = "".join(open(f"{log}.task{i}").read() for i in range(NUM_TASKS)
                  if os.path.exists(f"{log}.task{i}"))
  assert result.returncode == 0, result.stdout + result.stderr + tasks[-4000:]
  return tasks


def _checkpoints(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_slurm_script_forms_a_two_task_job_with_and_without_overrides(tmp_path, shims,
                                                                     shapes_data_dir):
  env, log = shims
  config, workdir = _tiny_config_file(tmp_path, shapes_data_dir), str(tmp_path / "run")
  tasks = _run(["bash", "launch/slurm.sbatch", config, workdir], env, log)
  assert "Process 1 of 2; 1 local of 2 global devices." in tasks
  assert _checkpoints(workdir) == [1]
  assert open(log).read().splitlines() == [
      f"srun python -m invariant_slots.main --distributed --config={config} --workdir={workdir}"]

  tasks = _run(["bash", "launch/slurm.sbatch", config, workdir, "--config.num_train_steps=2"],
               env, log)
  assert "Process 1 of 2" in tasks
  assert _checkpoints(workdir) == [1, 2]


def _dry_run(*args: str) -> list[str]:
  result = subprocess.run(
      ["bash", "launch/tpu_pod.sh", "--name", "pod", "--zone", "us-central2-b", "--type",
       "v4-32", "--dry-run", *args], cwd=REPO, capture_output=True, text=True, check=True,
      env=dict(os.environ, REPO_URL="https://x/r"))
  return result.stdout.splitlines()


def _main_arguments(gcloud_line: str) -> list[str]:
  """The arguments `invariant_slots.main` receives from a printed `gcloud ... --command`."""
  words = shlex.split(gcloud_line)
  command = shlex.split(words[words.index("--command") + 1])
  return command[command.index("invariant_slots.main") + 1:]


@pytest.mark.parametrize("overrides", [[], ["--config.batch_size=128", "--config.data.name=a b"]])
def test_tpu_dry_run_prints_each_command_and_passes_the_overrides_exactly(overrides):
  lines = _dry_run("configs/clevr.py", "gs://bucket/run", *overrides)
  assert len(lines) == 3
  assert shlex.split(lines[0])[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
  assert "pip install" in shlex.split(lines[1])[-1] and "https://x/r" in lines[1]
  assert _main_arguments(lines[2]) == ["--distributed", "--config=configs/clevr.py",
                                       "--workdir=gs://bucket/run", *overrides]


def test_tpu_launcher_runs_every_workers_commands(tmp_path, shims, shapes_data_dir):
  env, log = shims
  env["REPO_URL"] = REPO  # The workers clone this repository (its committed state).
  config, workdir = _tiny_config_file(tmp_path, shapes_data_dir), str(tmp_path / "run")
  launch = ["bash", "launch/tpu_pod.sh", "--name", "pod", "--zone", "z", "--type", "v4-8",
            config, workdir]
  tasks = _run(launch, env, log)
  assert "Process 1 of 2; 1 local of 2 global devices." in tasks
  assert _checkpoints(workdir) == [1]
  calls = open(log).read()
  assert "gcloud compute tpus tpu-vm create pod --zone z --accelerator-type v4-8" in calls
  assert calls.count("pip install -q -e . jax[tpu]") == NUM_TASKS
  for i in range(NUM_TASKS):
    assert os.path.isfile(tmp_path / "workers" / f"worker_{i}" / "invariant_slots" / "setup.py")

  tasks = _run(launch + ["--config.num_train_steps=2"], env, log)
  assert "Process 1 of 2" in tasks
  assert _checkpoints(workdir) == [1, 2]
