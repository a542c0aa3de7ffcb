"""Steps per second of each embedded config with XLA's and with our CPU convolutions.

    python benchmarks/cpu_convolutions.py                 # the four embedded configs
    python benchmarks/cpu_convolutions.py --configs configs/shapes.py --steps 40

For every config, with its own corrector, times the train step three times
in one process, choosing the CPU forms through `INVARIANT_SLOTS_CPU_CONV`:
XLA's convolutions everywhere (""), polyphase transposed convolutions only
("polyphase", the package before `modules/convolution.Conv`), and both fast
forms (the default: per-tap weight gradients too). Prints one markdown table.
"""

import argparse
import os

from throughput import DEFAULT_CONFIGS, REPO, measure

from invariant_slots import config_files
from invariant_slots.modules import convolution


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS))
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  args = parser.parse_args()
  print("| config | corrector | batch | XLA only (steps/s) | polyphase (steps/s) "
        "| polyphase + taps (steps/s) | speed-up over polyphase | over XLA |")
  print("|---|---|---|---|---|---|---|---|")
  for config_path in args.configs:
    corrector = config_files.load_config(os.path.join(REPO, config_path)).model.corrector.name
    rates = []
    for forms in ("", "polyphase", ",".join(convolution.FAST_FORMS)):
      os.environ[convolution.AUTO_VARIABLE] = forms
      row = measure(config_path, corrector, args.steps, args.warmup, {})
      rates.append(1e3 / row["step_ms"])
    print(f"| {config_path} | {corrector} | {row['batch_size']} | "
          + " | ".join(f"{r:.2f}" for r in rates)
          + f" | {rates[2] / rates[1]:.2f}x | {rates[2] / rates[0]:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
