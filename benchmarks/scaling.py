"""Training throughput for 1, 2, 4 devices and 1 vs 2 processes (CPU).

Forced CPU devices (`--xla_force_host_platform_device_count`) and the local
processes share the same physical cores, so on a small machine these numbers
show the overhead of sharding and cross-process collectives, not a speed-up.

    python benchmarks/scaling.py [--steps 60] [--batch_size 16]
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _step_times(workdir: str) -> dict[int, float]:
  """Wall time at which each step's loss was logged."""
  times = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      if any(v.tag == "train/loss" for v in event.summary.value):
        times[event.step] = event.wall_time
  return times


def run(processes: int, devices_per_process: int, steps: int, batch_size: int,
        data_dir: str) -> float:
  """Steady-state steps/s, timed between step 10 and the last step."""
  workdir = tempfile.mkdtemp(prefix="scaling_")
  config = f"{REPO}/configs/shapes.py"
  flags = [f"--config={config}", f"--config.num_train_steps={steps}",
           f"--config.batch_size={batch_size}", "--config.log_loss_every_steps=1",
           "--config.eval_every_steps=100000", "--config.checkpoint_every_steps=100000",
           f"--config.data.data_dir={data_dir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if processes == 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
    command = [sys.executable, "-m", "invariant_slots.main", f"--workdir={workdir}", *flags]
  else:
    env["DEVICES_PER_PROCESS"] = str(devices_per_process)
    command = ["bash", f"{REPO}/launch/local.sh", str(processes), config, workdir, *flags[1:]]
  subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
  times = _step_times(workdir)
  return (steps - 10) / (times[steps] - times[10])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--data_dir", default=None, help="TFDS directory (default: TFDS's).")
  args = parser.parse_args()
  data_dir = args.data_dir or os.path.expanduser("~/tensorflow_datasets")
  print(f"configs/shapes.py, global batch {args.batch_size}, {args.steps} steps, "
        f"{os.cpu_count()} CPU cores shared by all devices and processes\n")
  print("| processes | devices per process | devices | steps/s | examples/s |")
  print("|---|---|---|---|---|")
  for processes, per_process in ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2)):
    rate = run(processes, per_process, args.steps, args.batch_size, data_dir)
    print(f"| {processes} | {per_process} | {processes * per_process} | {rate:.2f} | "
          f"{rate * args.batch_size:.1f} |", flush=True)


if __name__ == "__main__":
  main()
