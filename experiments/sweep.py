"""Ablation sweeps: the cross product of config overrides x seeds, one gpt_jax run each, summarized.

    python -m experiments.sweep --config=configs/shakespeare_char_cpu.py \
        --sweep='model.pos=learned,sinusoidal,rope' --sweep='optim.lr=1e-3,3e-3' --seeds=3 \
        --out=results/pos_lr [--set model.n_layer=2 ...] [--print_commands | --summarize_only]

Each run is `python -m gpt_jax.main` in a subprocess (fresh memory and XLA state per run; a crash
fails that run only) in `<out>/runs/<setting>/seed<k>`, next to a `run_info.json` (overrides, seed,
git commit, package versions, attempts). Re-running skips finished runs and resumes interrupted ones
(gpt_jax resumes a workdir from its last checkpoint). Results are read from each run's
`metrics.jsonl` into `<out>/results.csv`, `<out>/results.md` and `<out>/loss_curves.png`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import functools
import importlib.metadata
import itertools
import json
import os
import pathlib
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from gpt_jax import run_config
from gpt_jax.analysis import plot

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections")
RUN_INFO, SUMMARY, SWEEP_FILE = "run_info.json", "summary.json", "sweep.json"
CSV_FIELDS = (
    "setting", "seed", "status", "step", "final_val_loss", "best_val_loss", "best_val_step",
    "final_train_loss", "tokens_per_sec", "wall_s", "workdir",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Run:
    setting: str  # the setting's directory name, e.g. "pos=rope,lr=3e-3"
    values: tuple[tuple[str, str], ...]  # the swept (key, value text) pairs of this setting
    seed: int
    workdir: pathlib.Path
    overrides: tuple[tuple[str, str], ...]  # every --config.<key>=<value> of the run, seed last


# ----------------------------------------------------------------------------- parsing


def parse_sweep(spec: str) -> tuple[str, list[str]]:
    """'model.pos=learned,rope' -> ('model.pos', ['learned', 'rope'])."""
    key, sep, values = spec.partition("=")
    items = [v.strip() for v in values.split(",")]
    if not sep or not key.strip():
        raise ValueError(f"--sweep {spec!r} is not KEY=V1,V2,...; e.g. --sweep='model.pos=learned,rope'")
    if not all(items):
        raise ValueError(f"--sweep {spec!r} has an empty value; use --sweep='{key}=v1,v2' (no empty items)")
    if len(set(items)) != len(items):
        raise ValueError(f"--sweep {spec!r} repeats a value; list each value once")
    return key.strip(), items


def parse_set(spec: str) -> tuple[str, str]:
    """'model.n_layer=2' -> ('model.n_layer', '2')."""
    key, sep, value = spec.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {spec!r} is not KEY=VALUE; e.g. --set model.n_layer=2")
    return key.strip(), value.strip()


def check_keys(sweeps: Sequence[tuple[str, list[str]]], fixed: Sequence[tuple[str, str]]) -> None:
    keys = [k for k, _ in sweeps] + [k for k, _ in fixed]
    for key in keys:
        if key == "seed":
            raise ValueError("seed is set per run by --seeds=N (seeds 0..N-1); drop it from --sweep/--set")
        if keys.count(key) > 1:
            raise ValueError(f"config key {key!r} is given more than once across --sweep/--set; give it once")


# ----------------------------------------------------------------------------- the runs


def short_keys(keys: Sequence[str]) -> list[str]:
    """The last part of each dotted key (`lr` for `optim.lr`), or the whole key where that repeats."""
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    return [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)]


def setting_name(values: Sequence[tuple[str, str]]) -> str:
    """A directory-safe name: 'pos=rope,lr=3e-3' ('base' when nothing is swept)."""
    if not values:
        return "base"
    shorts = short_keys([k for k, _ in values])
    return ",".join(f"{s}={re.sub(r'[^A-Za-z0-9._+:-]', '_', v)}" for s, (_, v) in zip(shorts, values))


def expand(sweeps: Sequence[tuple[str, list[str]]]) -> list[tuple[tuple[str, str], ...]]:
    """The cross product of the swept values, first --sweep outermost."""
    keys = [k for k, _ in sweeps]
    return [tuple(zip(keys, combo)) for combo in itertools.product(*(vals for _, vals in sweeps))]


def plan(
    sweeps: Sequence[tuple[str, list[str]]], fixed: Sequence[tuple[str, str]], seeds: int, out: pathlib.Path
) -> list[Run]:
    if seeds < 1:
        raise ValueError(f"--seeds={seeds}; give at least 1 (runs use seeds 0..N-1)")
    check_keys(sweeps, fixed)
    runs, names = [], {}
    for values in expand(sweeps):
        name = setting_name(values)
        if name in names and names[name] != values:
            raise ValueError(f"settings {names[name]} and {values} share the directory name {name!r}; rename a value")
        names[name] = values
        for seed in range(seeds):
            overrides = (*fixed, *values, ("seed", str(seed)))
            runs.append(Run(name, values, seed, out / "runs" / name / f"seed{seed}", overrides))
    return runs


def resolve(config_path: str, run: Run):
    """The run's config: the file plus its overrides (unknown keys and bad values raise ValueError)."""
    config = run_config.load_config(config_path)
    for key, value in run.overrides:
        run_config.set_override(config, key, value)
    return config


def command(config_path: str, run: Run, python: str = "python") -> list[str]:
    overrides = [f"--config.{k}={v}" for k, v in run.overrides]
    return [python, "-m", "gpt_jax.main", f"--config={config_path}", f"--workdir={run.workdir}", *overrides]


def override_texts(run: Run) -> list[str]:
    return [f"{k}={v}" for k, v in run.overrides]


def is_finished(workdir: pathlib.Path, num_steps: int) -> bool:
    """summary.json says the run completed all its steps (a preempted or killed run has not)."""
    try:
        summary = json.loads((workdir / SUMMARY).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return summary.get("status") == "completed" and int(summary.get("step", -1)) >= num_steps


def check_same_overrides(run: Run) -> None:
    """Refuse to continue a run that was started with other overrides (its results would mix)."""
    path = run.workdir / RUN_INFO
    if not path.exists():
        return
    before, now = json.loads(path.read_text()).get("overrides", []), override_texts(run)
    if before != now:
        raise ValueError(
            f"{run.workdir} was started with overrides {before}, not {now}; use a new --out (or delete that run)"
        )


# ----------------------------------------------------------------------------- provenance


def git_state(root: pathlib.Path) -> dict:
    """The checkout's commit and whether tracked files differ from it (None outside git)."""

    def git(*args):
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")  # noqa: UP017 - py3.10


def write_json(path: pathlib.Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)  # atomic: a sweep killed here leaves the old file or the new one


def start_attempt(run: Run, config_path: str, provenance: dict) -> dict:
    """run_info.json with a new attempt appended (an interrupted run accumulates attempts)."""
    path = run.workdir / RUN_INFO
    info = json.loads(path.read_text()) if path.exists() else {
        "setting": run.setting,
        "sweep": dict(run.values),
        "seed": run.seed,
        "config": config_path,
        "overrides": override_texts(run),
        "command": shlex.join(command(config_path, run)),
        "attempts": [],
    }  # fmt: skip
    info.update(provenance)  # the code that ran last; each attempt keeps its own commit too
    info["attempts"].append({"started": now_utc(), "git": provenance["git"]})
    write_json(path, info)
    return info


def end_attempt(run: Run, info: dict, wall_s: float, ok: bool, error: str | None = None) -> None:
    attempt = info["attempts"][-1]
    attempt.update(wall_s=round(wall_s, 3), ok=ok)
    if error:
        attempt["error"] = error
    write_json(run.workdir / RUN_INFO, info)


# ----------------------------------------------------------------------------- running


def run_subprocess(config_path: str, run: Run) -> str | None:
    """Run in a fresh `python -m gpt_jax.main`; its output goes to <workdir>/train.log. None = ok."""
    log_path = run.workdir / "train.log"
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n==== {now_utc()} {shlex.join(command(config_path, run))}\n")
        log.flush()
        proc = subprocess.run(
            command(config_path, run, sys.executable), stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if proc.returncode == 0:
        return None
    lines = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return f"exit {proc.returncode}: {lines[-1] if lines else ''}"


def run_in_process(config_path: str, run: Run) -> str | None:
    """Run via gpt_jax.trainer in this process (tests, notebooks: compiled code is reused)."""
    from gpt_jax.trainer import train_and_evaluate

    try:
        train_and_evaluate(resolve(config_path, run), run.workdir)
    except Exception as e:  # noqa: BLE001 - one failed run must not stop the sweep
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None


def run_all(config_path: str, runs: Sequence[Run], *, in_process: bool = False, log=print) -> list[Run]:
    """Run each unfinished run in order; returns the runs that failed."""
    configs = {run: resolve(config_path, run) for run in runs}  # every override checked before any run
    for run in runs:
        check_same_overrides(run)
    provenance = {"git": git_state(pathlib.Path(__file__).resolve().parents[1]), "versions": package_versions()}
    runner = run_in_process if in_process else run_subprocess
    failed = []
    for i, run in enumerate(runs, 1):
        where = f"[{i}/{len(runs)}] {run.setting} seed{run.seed}"
        if is_finished(run.workdir, configs[run].train.num_steps):
            log(f"{where}: finished, skipped")
            continue
        resumed = (run.workdir / "checkpoints").exists()
        log(f"{where}: {'resuming' if resumed else 'running'} in {run.workdir}")
        run.workdir.mkdir(parents=True, exist_ok=True)
        info = start_attempt(run, config_path, provenance)
        t0 = time.perf_counter()
        try:
            error = runner(config_path, run)
        except KeyboardInterrupt:  # the run keeps its checkpoints; the next sweep resumes it
            end_attempt(run, info, time.perf_counter() - t0, False, "interrupted")
            raise
        end_attempt(run, info, time.perf_counter() - t0, error is None, error)
        if error:
            log(f"{where}: FAILED ({error}); see {run.workdir}")
            failed.append(run)
    return failed


# ----------------------------------------------------------------------------- results


def collect_run(workdir: pathlib.Path) -> dict:
    """One results.csv row from a run's metrics.jsonl (and its run_info.json / summary.json)."""
    records = plot.read_records(workdir)
    info = json.loads((workdir / RUN_INFO).read_text()) if (workdir / RUN_INFO).exists() else {}
    try:
        summary = json.loads((workdir / SUMMARY).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        summary = {}
    val_steps, val = plot.curve(records, "val_loss")
    _, train = plot.curve(records, "train_loss")
    _, rates = plot.curve(records, "tokens_per_sec")
    best = min(range(len(val)), key=val.__getitem__) if val else None
    walls = [a.get("wall_s") for a in info.get("attempts", []) if a.get("wall_s") is not None]
    return {
        "setting": info.get("setting", workdir.parent.name),
        "seed": info.get("seed", workdir.name.removeprefix("seed")),
        "status": summary.get("status", "incomplete"),
        "step": max((int(r["step"]) for r in records), default=0),
        "final_val_loss": val[-1] if val else None,
        "best_val_loss": val[best] if val else None,
        "best_val_step": val_steps[best] if val else None,
        "final_train_loss": train[-1] if train else None,
        # the first logged rate includes compilation; the median of the rest is the steady rate
        "tokens_per_sec": statistics.median(rates[1:] or rates) if rates else None,
        "wall_s": round(sum(walls), 3) if walls else summary.get("wall_s"),
        "workdir": str(workdir),
        "sweep": info.get("sweep", {}),
    }


def find_runs(out: pathlib.Path) -> list[pathlib.Path]:
    """Workdirs under <out>/runs, in the sweep's setting order (sweep.json), then by name and seed."""
    order = []
    if (out / SWEEP_FILE).exists():
        order = json.loads((out / SWEEP_FILE).read_text()).get("settings", [])
    dirs = [p.parent for p in (out / "runs").glob("*/seed*/" + plot.METRICS_FILE)]

    def key(d):
        setting, seed = d.parent.name, d.name.removeprefix("seed")
        rank = order.index(setting) if setting in order else len(order)
        return rank, setting, int(seed) if seed.isdigit() else 0

    return sorted(dirs, key=key)


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def group(rows: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["setting"], []).append(row)
    return groups


def column(rows: Sequence[dict], field: str) -> list:
    return [r[field] for r in rows if r[field] is not None]


def markdown_table(rows: Sequence[dict]) -> str:
    """One line per setting: mean ± sample std over its completed seeds."""
    keys = list(dict.fromkeys(k for row in rows for k in row["sweep"]))
    shorts = short_keys(keys)
    head = ["setting", *shorts, "final val loss", "best val loss", "final train loss", "tokens/s", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting, group_rows in group(rows).items():
        done = [r for r in group_rows if r["status"] == "completed"]
        values = functools.partial(column, done)
        rate = values("tokens_per_sec")
        seeds = f"{len(done)}" if len(done) == len(group_rows) else f"{len(done)} of {len(group_rows)}"
        cells = [
            setting,
            *(str(group_rows[0]["sweep"].get(k, "")) for k in keys),
            mean_std(values("final_val_loss")),
            mean_std(values("best_val_loss")),
            mean_std(values("final_train_loss")),
            f"{statistics.mean(rate):,.0f}" if rate else "—",
            seeds,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summarize(out: pathlib.Path) -> list[dict]:
    """Write results.csv, results.md and loss_curves.png from the runs under <out>/runs."""
    workdirs = find_runs(out)
    if not workdirs:
        raise FileNotFoundError(f"no runs with {plot.METRICS_FILE} under {out / 'runs'}; run the sweep first")
    rows = [collect_run(w) for w in workdirs]
    keys = list(dict.fromkeys(k for row in rows for k in row["sweep"]))
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        # the swept keys get a column each, so the csv can be filtered without parsing names
        writer = csv.DictWriter(f, fieldnames=[*CSV_FIELDS[:2], *keys, *CSV_FIELDS[2:]], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, **row["sweep"]} for row in rows)
    (out / "results.md").write_text(markdown_table(rows), encoding="utf-8")
    series = {}
    for setting, group_rows in group(rows).items():
        records = [plot.read_records(r["workdir"]) for r in group_rows]
        label = f"{setting} (n={len(group_rows)})"
        series[label] = {k: plot.mean_curve([plot.curve(rs, k) for rs in records]) for k in ("train_loss", "val_loss")}
    plot.draw(series, out / "loss_curves.png", title=f"{out.name}: mean over seeds")
    return rows


# ----------------------------------------------------------------------------- CLI

USAGE = (
    "usage: python -m experiments.sweep --config=FILE --sweep='key=v1,v2' [--sweep=...] --seeds=N --out=DIR "
    "[--set key=value ...] [--print_commands] | --out=DIR --summarize_only"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        print(f"error: {message}; {USAGE}", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m experiments.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="a get_config() file, e.g. configs/shakespeare_char_cpu.py")
    p.add_argument("--sweep", action="append", default=[], help="'key=v1,v2,...' (repeat: cross product)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="fixed overrides")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per setting")
    p.add_argument("--out", required=True, help="the sweep's directory")
    p.add_argument("--print_commands", action="store_true", help="print one gpt_jax.main command per run; run none")
    p.add_argument("--summarize_only", action="store_true", help="rebuild results.* from existing runs")
    p.add_argument("--in_process", action="store_true", help="train in this process, not a subprocess per run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = pathlib.Path(args.out)
    try:
        if args.summarize_only:
            summarize(out)
            print(f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'loss_curves.png'}")
            return 0
        if not args.config:
            raise ValueError("--config is required (e.g. --config=configs/shakespeare_char_cpu.py)")
        sweeps = [parse_sweep(s) for s in args.sweep]
        fixed = [parse_set(s) for s in args.set]
        runs = plan(sweeps, fixed, args.seeds, out)
        for run in runs:
            resolve(args.config, run)  # fail on a bad key or value before anything runs
            check_same_overrides(run)
        if args.print_commands:
            for run in runs:
                print(shlex.join(command(args.config, run)))
            return 0
        write_json(
            out / SWEEP_FILE,
            {
                "config": args.config,
                "sweep": [f"{k}={','.join(v)}" for k, v in sweeps],
                "set": [f"{k}={v}" for k, v in fixed],
                "seeds": args.seeds,
                "settings": list(dict.fromkeys(r.setting for r in runs)),
            },
        )
        failed = run_all(args.config, runs, in_process=args.in_process)
        summarize(out)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(runs) - len(failed)}/{len(runs)} runs ok; results in {out}/results.md, results.csv, loss_curves.png")
    print((out / "results.md").read_text(), end="")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
