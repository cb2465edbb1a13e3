"""Loss curves from workdirs' metrics.jsonl to a PNG.

    python -m gpt_jax.plot --workdir=runs/a runs/b --out=loss.png

Reads only `metrics.jsonl` (never stdout or TensorBoard), so it works on a finished run, a running
one, or a copy of a workdir without its checkpoints. matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Sequence

from gpt_jax.paths import as_path

METRICS_FILE = "metrics.jsonl"  # gpt_jax.metrics.METRICS_FILE; not imported, so this needs no jax


def read_records(workdir: str | pathlib.Path) -> list[dict]:
    """The records of `<workdir>/metrics.jsonl` ([] if absent); a torn last line is skipped."""
    path = as_path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line of a run killed mid-write
    return records


def curve(records: Iterable[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records that have `key`, in step order."""
    points = sorted((int(r["step"]), float(r[key])) for r in records if r.get(key) is not None)
    return [s for s, _ in points], [v for _, v in points]


def mean_curve(curves: Sequence[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """Per-step mean over several runs' curves (a step counts the runs that logged it)."""
    by_step: dict[int, list[float]] = {}
    for steps, values in curves:
        for s, v in zip(steps, values):
            by_step.setdefault(s, []).append(v)
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def draw(series: dict[str, dict[str, tuple[list[int], list[float]]]], out: str | pathlib.Path, title: str = "") -> None:
    """One color per label: val loss solid with markers, train loss faint. series[label][key] = curve."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, curves) in enumerate(series.items()):
        color = f"C{i % 10}"
        steps, values = curves.get("train_loss", ([], []))
        if steps:
            ax.plot(steps, values, color=color, alpha=0.3, linewidth=1)
        steps, values = curves.get("val_loss", ([], []))
        if steps:
            ax.plot(steps, values, color=color, marker="o", markersize=3, linewidth=1.8, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (val solid, train faint)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def labels_for(workdirs: Sequence[pathlib.Path]) -> list[str]:
    """The workdir names; parent/name where names repeat (e.g. several `seed0` runs)."""
    names = [w.resolve().name for w in workdirs]
    return [f"{w.resolve().parent.name}/{n}" if names.count(n) > 1 else n for w, n in zip(workdirs, names)]


def plot_workdirs(workdirs: Sequence[str | pathlib.Path], out: str | pathlib.Path) -> None:
    dirs = [pathlib.Path(w) for w in workdirs]
    for w in dirs:
        if not (w / METRICS_FILE).exists():
            raise FileNotFoundError(f"{w / METRICS_FILE} not found; pass workdirs of gpt_jax runs")
    series = {}
    for label, w in zip(labels_for(dirs), dirs):
        records = read_records(w)
        series[label] = {k: curve(records, k) for k in ("train_loss", "val_loss")}
    draw(series, out)
