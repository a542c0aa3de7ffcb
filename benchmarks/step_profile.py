"""Where XLA:CPU spends the 128x128 train step, by kind of compiled operation.

    pip install -e ".[bench]"
    python benchmarks/step_profile.py             # batch 8, K=7, T=3, 128x128

Traces one train step of `benchmarks/compare_torch.py`'s model with
`jax.profiler` and sums the time of each compiled operation, grouped by kind
(the name XLA gives the operation without its number: `ynn_fusion` for the
convolutions and matrix products YNNPACK runs, `slice_bitcast_fusion` for
copies of array windows, ...), then lists the longest single operations.
"""

import argparse
import collections
import glob
import re
import tempfile

import jax
from jax.profiler import ProfileData

import compare_torch


def operation_times(trace_dir: str) -> dict[str, float]:
  """Milliseconds per compiled operation in the newest trace under `trace_dir`."""
  path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
  times = collections.defaultdict(float)
  for plane in ProfileData.from_file(path).planes:
    for line in plane.lines:
      if "XLA" not in line.name:  # The threads that run the compiled step.
        continue
      for event in line.events:
        if not event.name.startswith("ThunkExecutor"):
          times[event.name] += event.duration_ns / 1e6
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--num_slots", type=int, default=7)
  parser.add_argument("--top", type=int, default=12)
  args = parser.parse_args()
  run = compare_torch.jax_step(args.batch_size, args.resolution, args.num_slots, "float32")
  run()
  run()
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    run()
    jax.profiler.stop_trace()
    times = operation_times(trace_dir)
  kinds = collections.defaultdict(float)
  for name, milliseconds in times.items():
    kinds[re.sub(r"[.\d]+$", "", name)] += milliseconds
  total = sum(times.values())
  print(f"batch {args.batch_size}, {args.resolution}x{args.resolution}, K={args.num_slots}; "
        f"{total:.0f} ms in compiled operations\n")
  print("| kind of operation | ms | share |")
  print("|---|---|---|")
  for kind, milliseconds in sorted(kinds.items(), key=lambda item: -item[1])[:args.top]:
    print(f"| `{kind}` | {milliseconds:.0f} | {milliseconds / total:.0%} |")
  print("\n| longest operations | ms |")
  print("|---|---|")
  for name, milliseconds in sorted(times.items(), key=lambda item: -item[1])[:args.top]:
    print(f"| `{name}` | {milliseconds:.0f} |")


if __name__ == "__main__":
  main()
