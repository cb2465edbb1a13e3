"""Fault injection: SIGKILL a tiny training run at random points (inside checkpoint writes too), resume it,
and check the end result equals an uninterrupted run; corrupt checkpoints and check detection + fallback.

  python -m benchmarks.fault_injection [--kills=8] [--seed=0] [--dir=/tmp/gpt_jax_fault_injection]
                                       [--slow_commit=0.3] [--set key=value ...]

Every run is `python -m gpt_jax.main --config=configs/tiny.py` (plus the overrides below) in a child
process. Kills alternate between two kinds:
- write: wait for a `<step>.orbax-checkpoint-tmp` directory in `checkpoints/`, then SIGKILL within
  `--slow_commit` seconds. The child delays each commit by that long (it patches the integrity
  record's finalize to sleep first), so the kill really lands while the checkpoint is being written;
- random: SIGKILL at a uniformly random time within the uninterrupted run's wall time (start-up,
  training, evaluation, the last save).
After every kill the same command is started again (it resumes; the dead trainer's workdir lock goes
with it). Checked at the end: every metrics.jsonl row (train_loss, lr, grad_norm, val_loss per step)
and summary.json's val_loss/train_loss equal the uninterrupted run's, bit for bit.

Corruptions, each on a copy of the finished run, of its latest checkpoint: a data file truncated, an
empty state/_METADATA, a truncated meta/metadata, 8 bytes overwritten inside a data file. Checked:
`python -m gpt_jax.evaluate` names the step and falls back to the previous checkpoint, and resuming
training falls back too, keeps the broken step (moved to `<step>.corrupt`) and ends with the same
metrics as the uninterrupted run.

Prints: kills survived, kills inside a checkpoint write, corruptions detected, steps of work lost,
data lost (metric rows or summary values that differ from the uninterrupted run, or a broken
checkpoint that was deleted; must be 0). Exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from gpt_jax import checkpoint_integrity
from gpt_jax import main as gpt_main

REPO = pathlib.Path(__file__).resolve().parents[1]
TMP_SUFFIX = ".orbax-checkpoint-tmp"
METRIC_KEYS = ("train_loss", "lr", "grad_norm", "val_loss", "val_ppl")

# The run every kill interrupts: 10 checkpoints, a log line every 5 steps, evaluations every 50 steps.
DEFAULT_OVERRIDES = {
    "train.num_steps": "200",
    "train.steps_per_call": "5",
    "train.log_every": "5",
    "train.eval_every": "50",
    "train.eval_batches": "2",
    "checkpoint.every": "20",
    "checkpoint.keep": "2",
    "sample.num_tokens": "0",
}


def main_argv(workdir: pathlib.Path, overrides: dict[str, str]) -> list[str]:
    return ["--config=configs/tiny.py", f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]


def child_command(argv: Sequence[str], slow_commit: float = 0.0) -> list[str]:
    return [sys.executable, "-m", "benchmarks.fault_injection", "--child", f"--slow_commit={slow_commit}", "--", *argv]


def _child(argv: Sequence[str], slow_commit: float) -> int:
    """gpt_jax.main in this process, each checkpoint commit delayed by `slow_commit` s (a wider kill window)."""
    if slow_commit > 0:
        finalize = checkpoint_integrity.IntegrityTemporaryPath.finalize

        async def slow_finalize(self):
            if self.get_final().name.isdigit():
                await asyncio.sleep(slow_commit)
            await finalize(self)

        checkpoint_integrity.IntegrityTemporaryPath.finalize = slow_finalize
    return gpt_main.main(list(argv))


# --- what a run left behind ---------------------------------------------------------------------


def read_rows(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line the kill cut short
                rows.append(json.loads(line))
    return rows


def committed_steps(workdir: pathlib.Path) -> list[int]:
    d = workdir / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "commit_success.txt").is_file())


def tmp_dirs(workdir: pathlib.Path) -> list[str]:
    try:
        return [n for n in os.listdir(workdir / "checkpoints") if TMP_SUFFIX in n]
    except FileNotFoundError:
        return []


def compare(reference: pathlib.Path, workdir: pathlib.Path) -> list[str]:
    """What differs from the reference run: metric rows (missing, extra or unequal) and summary values."""
    ref = {r["step"]: r for r in read_rows(reference)}
    got: dict[int, dict] = {}
    problems = []
    for r in read_rows(workdir):
        if r["step"] in got:
            problems.append(f"step {r['step']} logged twice")
        got[r["step"]] = r
    for step in sorted(ref.keys() | got.keys()):
        a, b = ref.get(step), got.get(step)
        if a is None or b is None:
            problems.append(f"step {step} {'missing' if b is None else 'extra'}")
        elif any(a.get(k) != b.get(k) for k in METRIC_KEYS):
            problems.append(f"step {step}: {[(k, a.get(k), b.get(k)) for k in METRIC_KEYS if a.get(k) != b.get(k)]}")
    try:
        sa, sb = (json.loads((w / "summary.json").read_text()) for w in (reference, workdir))
        problems += [
            f"summary {k}: {sa.get(k)} != {sb.get(k)}"
            for k in ("val_loss", "train_loss", "step")
            if sa.get(k) != sb.get(k)
        ]
    except FileNotFoundError as e:
        problems.append(f"no summary.json ({e.filename})")
    return problems


# --- corruptions ----------------------------------------------------------------------------------


def largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate_data(step_dir: pathlib.Path) -> None:
    f = largest_data_file(step_dir)
    os.truncate(f, f.stat().st_size // 2)


def _overwrite_8_bytes(step_dir: pathlib.Path) -> None:
    f = largest_data_file(step_dir)
    with open(f, "r+b") as fh:
        fh.seek(f.stat().st_size // 2)
        old = fh.read(8)
        fh.seek(-len(old), os.SEEK_CUR)
        fh.write(bytes(b ^ 0xFF for b in old))  # every byte really changes


CORRUPTIONS: dict[str, Callable[[pathlib.Path], None]] = {
    "truncated data file": _truncate_data,
    "empty state/_METADATA": lambda d: (d / "state" / "_METADATA").write_bytes(b""),
    "truncated meta/metadata": lambda d: os.truncate(d / "meta" / "metadata", 3),
    "8 bytes overwritten in a data file": _overwrite_8_bytes,
}


# --- runs -----------------------------------------------------------------------------------------


def launch(argv: Sequence[str], log: pathlib.Path, slow_commit: float = 0.0) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(child_command(argv, slow_commit), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def run_to_end(argv: Sequence[str], log: pathlib.Path, timeout: float = 600) -> tuple[float, float]:
    """Run to completion: (wall seconds, seconds until its first metrics line, i.e. the start-up)."""
    workdir = pathlib.Path(next(a for a in argv if a.startswith("--workdir=")).split("=", 1)[1])
    t0, first = time.perf_counter(), None
    proc = launch(argv, log)
    while proc.poll() is None and time.perf_counter() - t0 < timeout:
        if first is None and read_rows(workdir):
            first = time.perf_counter() - t0
        time.sleep(0.05)
    if proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0))) != 0:
        raise RuntimeError(f"run failed with status {proc.returncode}; see {log}")
    wall = time.perf_counter() - t0
    return wall, first if first is not None else wall


def kill_once(
    argv,
    workdir: pathlib.Path,
    log: pathlib.Path,
    kind: str,
    rng: random.Random,
    *,
    wall: float,
    startup: float,
    remaining: float,
    slow_commit: float,
) -> dict:
    """Start the run, SIGKILL it per `kind` ('write' or 'random'); what it had done when it died.
    `wall`/`startup`: the uninterrupted run's; `remaining`: the fraction of its training a random kill may
    let this launch do."""
    launched_at = time.time()
    proc = launch(argv, log, slow_commit if kind == "write" else 0.0)
    t0, killed = time.perf_counter(), False
    if kind == "write":
        skip, seen, last = rng.randrange(2), 0, None
        while proc.poll() is None and time.perf_counter() - t0 < 10 * wall + 60:
            tmp = tmp_dirs(workdir)
            if tmp and tmp[0] != last:
                last, seen = tmp[0], seen + 1
                if seen > skip or rng.random() < 0.3:
                    time.sleep(rng.uniform(0, slow_commit * 0.8))
                    killed = proc.poll() is None
                    break
            time.sleep(0.002)
    else:
        # Start-up (imports, data, compilation) or any time in the training still to do.
        deadline = t0 + startup * rng.uniform(0.3, 1.0) + rng.uniform(0.0, 1.0) * (wall - startup) * remaining
        while proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = committed_steps(workdir)
    resume_from = steps[-1] if steps else 0
    # Rows this launch logged (a resumed run rewrites metrics.jsonl first; older rows were counted before).
    metrics = workdir / "metrics.jsonl"
    fresh = metrics.exists() and metrics.stat().st_mtime >= launched_at
    progress = max((r["step"] for r in read_rows(workdir)), default=0) if fresh else resume_from
    return {
        "kind": kind,
        "killed": killed and proc.returncode == -signal.SIGKILL,
        "in_write": bool(tmp_dirs(workdir)),
        "progress": progress,
        "resume_from": resume_from,
        "lost_steps": max(0, progress - resume_from) if killed else 0,
        "finished": not killed and proc.returncode == 0,
        "crashed": None if killed or proc.returncode == 0 else f"exited with status {proc.returncode}; see {log}",
    }


def kill_and_resume(
    reference: pathlib.Path,
    workdir: pathlib.Path,
    overrides: dict[str, str],
    *,
    kills: int,
    seed: int,
    wall: float,
    startup: float,
    slow_commit: float,
) -> dict:
    """`kills` SIGKILLs (alternating write/random), then a run to the end; compared with `reference`."""
    rng, argv, log = random.Random(seed), main_argv(workdir, overrides), workdir.parent / f"{workdir.name}.log"
    num_steps, events = int(overrides["train.num_steps"]), []
    for i in range(kills):
        # a random kill lands in its share of the training still to do, so that all `kills` fit in one run
        remaining = (1 - (events[-1]["resume_from"] if events else 0) / num_steps) / (kills - i)
        events.append(
            kill_once(
                argv,
                workdir,
                log,
                ("write", "random")[i % 2],
                rng,
                wall=wall,
                startup=startup,
                remaining=remaining,
                slow_commit=slow_commit,
            )
        )
        if events[-1]["finished"] or events[-1]["crashed"]:
            break  # the run ended before the kill: nothing left to interrupt (or it failed by itself)
    if not (events and (events[-1]["finished"] or events[-1]["crashed"])):
        run_to_end(argv, log)
    problems = [f"a run {e['crashed']}" for e in events if e["crashed"]] + compare(reference, workdir)
    return {"events": events, "problems": problems}


def corrupt_and_recover(
    reference: pathlib.Path, base: pathlib.Path, overrides: dict[str, str], name: str, *, evaluate: bool = True
) -> dict:
    """Copy the finished reference run, break its latest checkpoint, then evaluate (optional) and resume."""
    workdir = base / name.replace(" ", "_").replace("/", "_")
    shutil.copytree(reference, workdir)
    steps = committed_steps(workdir)
    latest, previous = steps[-1], steps[-2]
    CORRUPTIONS[name](workdir / "checkpoints" / str(latest))
    log = base / f"{workdir.name}.log"
    out: dict = {"corruption": name, "latest": latest, "previous": previous, "lost_steps": latest - previous}
    if evaluate:
        proc = subprocess.run(
            [sys.executable, "-m", "gpt_jax.evaluate", f"--workdir={workdir}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        named = [ln for ln in proc.stderr.splitlines() if f"checkpoints/{latest}" in ln and "skipping" in ln]
        result = json.loads(proc.stdout.splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else {}
        out["evaluate_step"] = result.get("step")
        out["detected"] = proc.returncode == 0 and result.get("step") == previous and len(named) == 1
    run_to_end(main_argv(workdir, overrides), log)
    kept = workdir / "checkpoints" / f"{latest}.corrupt"
    out["kept_broken_step"] = kept.is_dir()
    out["problems"] = compare(reference, workdir) + ([] if kept.is_dir() else [f"{kept} is gone"])
    if not evaluate:
        out["detected"] = kept.is_dir()
    return out


def report(kill: dict, corruptions: list[dict]) -> dict:
    events = kill["events"]
    killed = [e for e in events if e["killed"]]
    data_lost = len(kill["problems"]) + sum(len(c["problems"]) for c in corruptions)
    return {
        "kills": len(killed),
        "kills_survived": len(killed) if not kill["problems"] else 0,
        "kills_inside_checkpoint_write": sum(e["in_write"] for e in killed),
        "corruptions": len(corruptions),
        "corruptions_detected": sum(bool(c.get("detected")) for c in corruptions),
        "steps_of_work_lost_to_kills": sum(e["lost_steps"] for e in killed),
        "max_steps_lost_per_kill": max((e["lost_steps"] for e in killed), default=0),
        "steps_of_work_lost_to_corruptions": sum(c["lost_steps"] for c in corruptions),
        "data_lost": data_lost,
        "problems": kill["problems"] + [p for c in corruptions for p in c["problems"]],
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        sep = argv.index("--")
        slow = float(next(a.split("=", 1)[1] for a in argv[:sep] if a.startswith("--slow_commit=")))
        return _child(argv[sep + 1 :], slow)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default="/tmp/gpt_jax_fault_injection")
    p.add_argument("--slow_commit", type=float, default=0.3)
    p.add_argument("--set", nargs="*", default=[], help="more --config overrides, key=value")
    args = p.parse_args(argv)
    overrides = {**DEFAULT_OVERRIDES, **dict(kv.split("=", 1) for kv in args.set)}
    base = pathlib.Path(args.dir)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    reference = base / "reference"
    t0 = time.perf_counter()
    wall, startup = run_to_end(main_argv(reference, overrides), base / "reference.log")
    print(f"uninterrupted run: {wall:.1f} s, {startup:.1f} s of it start-up ({reference})", flush=True)
    kill = kill_and_resume(
        reference,
        base / "killed",
        overrides,
        kills=args.kills,
        seed=args.seed,
        wall=wall,
        startup=startup,
        slow_commit=args.slow_commit,
    )
    for e in kill["events"]:
        print(
            f"  kill ({e['kind']}): {'SIGKILL' if e['killed'] else 'finished first'}"
            f"{' inside a checkpoint write' if e['in_write'] else ''}, logged step {e['progress']}, "
            f"resumes from {e['resume_from']}, {e['lost_steps']} steps lost",
            flush=True,
        )
    corruptions = []
    for name in CORRUPTIONS:
        c = corrupt_and_recover(reference, base, overrides, name)
        corruptions.append(c)
        print(
            f"  corruption '{name}' of step {c['latest']}: detected={c['detected']}, evaluate used step "
            f"{c['evaluate_step']}, resume fell back to {c['previous']}, broken step kept={c['kept_broken_step']}",
            flush=True,
        )
    figures = report(kill, corruptions)
    print(
        f"kills survived: {figures['kills_survived']}/{figures['kills']} "
        f"({figures['kills_inside_checkpoint_write']} inside a checkpoint write)"
    )
    print(f"corruptions detected: {figures['corruptions_detected']}/{figures['corruptions']}")
    print(
        f"steps of work lost: {figures['steps_of_work_lost_to_kills']} to kills (at most "
        f"{figures['max_steps_lost_per_kill']} per kill; checkpoint.every={overrides['checkpoint.every']}), "
        f"{figures['steps_of_work_lost_to_corruptions']} to corruptions"
    )
    print(f"data lost: {figures['data_lost']}" + (f" {figures['problems'][:5]}" if figures["problems"] else ""))
    print(f"total {time.perf_counter() - t0:.0f} s")
    ok = (
        figures["data_lost"] == 0 and figures["corruptions_detected"] == figures["corruptions"] and figures["kills"] > 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
