"""Tables, curves and a web page from the TensorBoard events of finished runs.

    python -m invariant_slots.report /tmp/sweep            # a sweep root
    python -m invariant_slots.report /tmp/run_a /tmp/run_b  # or workdirs

A workdir is any folder with `events.out.tfevents.*` files; workdirs with the
same parent folder form a group (a sweep writes `ROOT/<group>/seed<s>`), and a
workdir given on its own is a group of one. Writes to `--output_dir` (default
`FIRST_ARGUMENT/report`):

  report.md     per group and eval metric: the final and the best value, mean
                ± std over the seeds, with the steps and the wall-clock time
  <metric>.png  the metric against the step, a thin line per seed and the
                group's mean in bold
  report.html   both, and each group's eval images of its last evaluation
"""

import dataclasses
import glob
import html
import os
import sys
from typing import Sequence

import numpy as np
from absl import app

from invariant_slots import cli
from invariant_slots.registry import ConfigError

# Eval metrics where lower is better; the rest are "best" at their maximum.
LOWER_IS_BETTER = ("eval/loss",)
# Scalars too fine-grained for the table and curves (still in TensorBoard).
_SKIPPED = ("/share_rank_",)


@dataclasses.dataclass
class Run:
  """The events of one workdir: scalar curves `{tag: (steps, values)}` and the
  eval images of the last evaluation `{tag: [PNG bytes]}`."""

  workdir: str
  scalars: dict[str, tuple[np.ndarray, np.ndarray]]
  images: dict[str, list[bytes]]
  wall_seconds: float

  @property
  def last_step(self) -> int:
    return max((int(steps[-1]) for steps, _ in self.scalars.values() if len(steps)), default=0)


def read_run(workdir: str) -> Run:
  """Reads every event file of `workdir` with TensorBoard's event reader."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top

  paths = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
  if not paths:
    raise ConfigError(f"No TensorBoard events in {workdir}; pass a training workdir or a "
                      "sweep root.")
  series: dict[str, dict[int, float]] = {}
  images: dict[str, tuple[int, list[bytes]]] = {}
  times = []
  for path in paths:
    accumulator = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
    accumulator.Reload()
    for tag in accumulator.Tags()[event_accumulator.TENSORS]:
      for event in accumulator.Tensors(tag):
        times.append(event.wall_time)
        value = tensor_util.make_ndarray(event.tensor_proto)
        if value.dtype == object:  # An image summary: width, height, then PNGs.
          if event.step >= images.get(tag, (-1, []))[0]:
            images[tag] = (event.step, [bytes(v) for v in value.ravel()[2:]])
        elif value.size == 1:
          series.setdefault(tag, {})[event.step] = float(value)
  scalars = {tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)]))
             for tag, points in series.items()}
  return Run(workdir=workdir, scalars=scalars,
             images={tag: pngs for tag, (_, pngs) in images.items()},
             wall_seconds=(max(times) - min(times)) if times else 0.0)


def find_workdirs(paths: Sequence[str]) -> dict[str, list[str]]:
  """`{group: [workdir, ...]}` for workdirs and sweep roots, in sorted order."""
  groups: dict[str, list[str]] = {}
  for path in paths:
    if not os.path.isdir(path):
      raise ConfigError(f"{path} is not a directory; pass sweep roots or training workdirs.")
    events = glob.glob(os.path.join(path, "**", "events.out.tfevents.*"), recursive=True)
    workdirs = sorted({os.path.dirname(e) for e in events})
    if not workdirs:
      raise ConfigError(f"No TensorBoard events under {path}; has a run written its first "
                        "log?")
    for workdir in workdirs:
      if workdir == os.path.normpath(path):
        group = os.path.basename(os.path.normpath(path))
      else:
        group = os.path.relpath(os.path.dirname(workdir), path)
        group = os.path.basename(os.path.normpath(path)) if group == "." else group
      groups.setdefault(group, []).append(workdir)
  return groups


def _mean_std(values: Sequence[float]) -> str:
  values = np.asarray(values, np.float64)
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def eval_tags(runs: Sequence[Run]) -> list[str]:
  """The eval metrics of the runs, sorted, without the per-rank detail."""
  tags = {tag for run in runs for tag in run.scalars if tag.startswith("eval/")}
  return sorted(tag for tag in tags if not any(part in tag for part in _SKIPPED))


def summary(groups: dict[str, list[Run]]) -> dict[str, dict[str, dict[str, list[float]]]]:
  """`{group: {metric: {"final": [per seed], "best": [per seed]}}}` of the eval metrics."""
  result = {}
  for group, runs in groups.items():
    result[group] = {}
    for tag in eval_tags(runs):
      finals, bests = [], []
      for run in runs:
        if tag in run.scalars:
          values = run.scalars[tag][1]
          finals.append(float(values[-1]))
          bests.append(float(values.min() if tag in LOWER_IS_BETTER else values.max()))
      result[group][tag] = {"final": finals, "best": bests}
  return result


def markdown_table(groups: dict[str, list[Run]]) -> str:
  """One row per group and eval metric: final and best, mean ± std over the runs."""
  rows = ["| group | metric | final | best | runs | steps | wall-clock (min) |",
          "|---|---|---|---|---|---|---|"]
  for group, metrics in summary(groups).items():
    runs = groups[group]
    steps = "/".join(sorted({str(run.last_step) for run in runs}))
    minutes = np.mean([run.wall_seconds for run in runs]) / 60
    for tag, values in metrics.items():
      rows.append(f"| {group} | {tag.removeprefix('eval/')} | {_mean_std(values['final'])} | "
                  f"{_mean_std(values['best'])} | {len(values['final'])} | {steps} | "
                  f"{minutes:.1f} |")
  return "\n".join(rows)


def plot_curves(groups: dict[str, list[Run]], output_dir: str) -> list[str]:
  """One PNG per eval metric (a thin line per run, the group mean in bold); their names."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = []
  all_runs = [run for runs in groups.values() for run in runs]
  for tag in eval_tags(all_runs):
    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (group, runs) in enumerate(groups.items()):
      color = f"C{index % 10}"
      curves = [run.scalars[tag] for run in runs if tag in run.scalars]
      for steps, values in curves:
        axis.plot(steps, values, color=color, linewidth=0.8, alpha=0.5)
      common = sorted(set.intersection(*(set(steps.tolist()) for steps, _ in curves)))
      if common:
        mean = [np.mean([values[list(steps).index(s)] for steps, values in curves])
                for s in common]
        axis.plot(common, mean, color=color, linewidth=2.5, label=f"{group} (mean)")
    axis.set_xlabel("step")
    axis.set_ylabel(tag.removeprefix("eval/"))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    name = tag.removeprefix("eval/").replace("/", "_") + ".png"
    figure.savefig(os.path.join(output_dir, name), dpi=90)
    plt.close(figure)
    names.append(name)
  return names


def write_html(groups: dict[str, list[Run]], table: str, curves: Sequence[str],
               output_dir: str) -> str:
  """`report.html`: the table, the curves and each group's last eval images."""
  parts = ["<!doctype html><html><head><meta charset='utf-8'><title>invariant_slots report"
           "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
           "collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "img.curve{width:480px}img.eval{image-rendering:pixelated;height:96px}</style>"
           "</head><body><h1>invariant_slots report</h1><h2>Eval metrics</h2><table>"]
  lines = table.splitlines()
  parts.append("<tr>" + "".join(f"<th>{html.escape(c.strip())}</th>"
                                for c in lines[0].strip("|").split("|")) + "</tr>")
  for line in lines[2:]:
    parts.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>"
                                  for c in line.strip("|").split("|")) + "</tr>")
  parts.append("</table><h2>Curves</h2>")
  parts += [f"<img class='curve' src='{name}' alt='{name}'>" for name in curves]
  parts.append("<h2>Eval images of the last evaluation</h2>")
  for index, (group, runs) in enumerate(groups.items()):
    run = runs[0]
    parts.append(f"<h3>{html.escape(group)} ({html.escape(os.path.basename(run.workdir))}, "
                 f"step {run.last_step})</h3>")
    for tag, pngs in sorted(run.images.items()):
      for image_index, png in enumerate(pngs[:2]):
        name = f"image_{index}_{tag.replace('/', '_')}_{image_index}.png"
        with open(os.path.join(output_dir, name), "wb") as f:
          f.write(png)
        parts.append(f"<figure style='display:inline-block'><img class='eval' src='{name}'>"
                     f"<figcaption>{html.escape(tag)}</figcaption></figure>")
  parts.append("</body></html>")
  path = os.path.join(output_dir, "report.html")
  with open(path, "w") as f:
    f.write("\n".join(parts))
  return path


def write_report(paths: Sequence[str], output_dir: str) -> dict[str, str]:
  """Reads the runs under `paths` and writes the report; the written files by kind."""
  groups = {group: [read_run(w) for w in workdirs]
            for group, workdirs in find_workdirs(paths).items()}
  os.makedirs(output_dir, exist_ok=True)
  table = markdown_table(groups)
  curves = plot_curves(groups, output_dir)
  markdown = os.path.join(output_dir, "report.md")
  with open(markdown, "w") as f:
    f.write("# invariant_slots report\n\n" + table + "\n\n" +
            "\n".join(f"![{name}]({name})" for name in curves) + "\n")
  return {"markdown": markdown, "html": write_html(groups, table, curves, output_dir),
          "curves": ",".join(curves)}


def main(argv: Sequence[str]) -> None:
  paths = list(argv[1:])
  if not paths:
    cli.fail("Pass one or more sweep roots or training workdirs.")
  output_dir = cli.OUTPUT_DIR.value or os.path.join(paths[0], "report")
  try:
    written = write_report(paths, output_dir)
  except ConfigError as e:
    cli.fail(str(e))
  print(open(written["markdown"]).read().split("\n\n")[1])
  print(f"Wrote {written['markdown']}, {written['html']} and the curves to {output_dir}.",
        file=sys.stderr)


if __name__ == "__main__":
  cli.use_flags("output_dir")
  app.run(main, flags_parser=cli.parse_flags)
