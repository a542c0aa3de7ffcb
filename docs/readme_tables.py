"""The README's corrector and config tables, generated from the code.

    python docs/readme_tables.py           # prints the tables
    python docs/readme_tables.py --write   # rewrites them in README.md

Each table sits between `<!-- BEGIN name -->` and `<!-- END name -->` in the
README; `tests/test_architecture.py` checks that the README matches.
"""

import ast
import glob
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from invariant_slots import config_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from invariant_slots.modules.correctors import CORRECTORS  # pylint: disable=g-import-not-at-top,wrong-import-position


def _first_line(text: str | None) -> str:
  return (text or "").strip().splitlines()[0] if text else ""


def correctors_table() -> str:
  """One row per registered corrector: its name and the first line of its docstring."""
  rows = ["| `name` | what it is |", "|---|---|"]
  rows += [f"| `{name}` | {_first_line(CORRECTORS.get(name).__doc__)} |"
           for name in CORRECTORS.names
           if CORRECTORS.get(name).__module__.startswith("invariant_slots.")]
  return "\n".join(rows)


def configs_table() -> str:
  """One row per config file: what it trains, its pipeline, data source and model parts."""
  rows = ["| config | what | pipeline | data | corrector | slots | steps |",
          "|---|---|---|---|---|---|---|"]
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    name = os.path.basename(path)
    if name in ("__init__.py", "common.py"):
      continue
    with open(path) as f:
      what = _first_line(ast.get_docstring(ast.parse(f.read())))
    config = config_files.load_config(path)
    model = config.model
    rows.append(f"| `configs/{name}` | {what} | `{config.pipeline}` | `{config.data.source}` | "
                f"`{model.corrector.name}` | {model.num_slots} | {config.num_train_steps:,} |")
  return "\n".join(rows)


TABLES = {"correctors": correctors_table, "configs": configs_table}


def with_tables(readme: str) -> str:
  """`readme` with every marked table replaced by its generated text."""
  for name, make in TABLES.items():
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pattern.search(readme):
      raise ValueError(f"README.md has no <!-- BEGIN {name} --> ... <!-- END {name} --> block.")
    readme = pattern.sub(lambda m, text=make(): m.group(1) + text + "\n" + m.group(2), readme)
  return readme


def main() -> None:
  path = os.path.join(REPO, "README.md")
  if "--write" in sys.argv[1:]:
    with open(path) as f:
      text = with_tables(f.read())
    with open(path, "w") as f:
      f.write(text)
  else:
    for make in TABLES.values():
      print(make(), end="\n\n")


if __name__ == "__main__":
  main()
