"""Our train step against nanoGPT's own train.py on the same shapes, interleaved round by round, this host.

  python -m benchmarks.vs_nanogpt --nanogpt_dir=PATH [--recipe=cpu|gpu] [--rounds=3] [--steps=N]
      [--dtype=float32|bfloat16] [--rss] [--time_to_val] [--no_speed]

nanoGPT (unmodified, path given, e.g. ../shared/baselines/nanogpt) is copied to a temp dir, its
char-level data prepared from the staged tiny Shakespeare (no download), and its README command run
with a small --max_iters. Its step time is the median `time T ms` of its log over non-eval steps after
two warm-up iters; ours is the Trainer's jitted K-step call (benchmarks.train_throughput.StepTimer,
compiled once before round 1). Prints one JSON line per round and a summary line (medians, ratio, host
CPU model and its avx512_bf16/amx flags). Optional, one run each:
  --rss          peak RSS of the main job (`gpt_jax.main` on the recipe's config, --rss_steps steps)
                 and of nanoGPT's train.py on the same recipe and steps (os.wait4's ru_maxrss).
  --time_to_val  wall time from process start to val loss <= 1.88: ours = configs/shakespeare_speedrun.py
                 (says whether the compile cache was warm), nanoGPT = its full CPU recipe (2,000 iters),
                 with the time of its first eval <= 1.88 if any, else of its last eval.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USAGE = "usage: python -m benchmarks.vs_nanogpt --nanogpt_dir=PATH [--recipe=cpu|gpu] [--rounds=3] [--steps=N]"
REPO = Path(__file__).resolve().parents[1]
TARGET = 1.88


@dataclasses.dataclass(frozen=True)
class Recipe:
    config: str  # our config file (same shapes)
    nanogpt_args: tuple[str, ...]  # after train.py config/train_shakespeare_char.py --device=cpu --compile=False
    steps: int  # timed steps per round (default)
    tokens_per_step: int


RECIPES = {
    "cpu": Recipe(
        "configs/shakespeare_char_cpu.py",
        (
            "--block_size=64",
            "--batch_size=12",
            "--n_layer=4",
            "--n_head=4",
            "--n_embd=128",
            "--lr_decay_iters=2000",
            "--dropout=0.0",
        ),  # fmt: skip
        100,
        12 * 64,
    ),
    "gpu": Recipe("configs/shakespeare_char.py", (), 4, 64 * 256),
    "tiny": Recipe(
        "configs/tiny.py", ("--block_size=32", "--batch_size=8", "--n_layer=2", "--n_head=2", "--n_embd=32"), 10, 8 * 32
    ),  # tests
}
LINE = re.compile(r"^iter (\d+): loss [-\d.naif]+, time ([\d.]+)ms")
EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def parse_step_ms(log: str, warmup: int = 2, eval_interval: int = 250) -> list[float]:
    """nanoGPT's per-iter times (ms) from its log: not iter 0..warmup-1 (start-up), not eval iters."""
    out = []
    for line in log.splitlines():
        m = LINE.match(line.strip())
        if m and int(m.group(1)) >= warmup and int(m.group(1)) % eval_interval:
            out.append(float(m.group(2)))
    return out


def host_info() -> dict:
    flags, model = set(), "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": any(f.startswith("amx") for f in flags),
        "load_avg_1m": os.getloadavg()[0],
    }


def prepare_nanogpt(src: Path, dst: Path) -> Path:
    """A scratch copy of nanoGPT with its char-level data built from the staged text (no download)."""
    if not (src / "train.py").is_file():
        raise FileNotFoundError(f"{src}/train.py not found; pass --nanogpt_dir=<the staged nanoGPT dir>")
    text = Path(os.environ.get("GPT_JAX_DATA_DIR", REPO.parent / "shared" / "data")) / "tiny_shakespeare/input.txt"
    if not text.is_file():
        raise FileNotFoundError(f"{text} not found; set GPT_JAX_DATA_DIR to the staged data dir")
    ng = dst / "nanogpt"
    shutil.copytree(src, ng)
    data = ng / "data" / "shakespeare_char"
    shutil.copy(text, data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    return ng


def run_timed(cmd: list[str], cwd, env=None) -> tuple[str, dict]:
    """Run to completion; (stdout+stderr, {wall_s, maxrss_mb, cpu_s, events: [(t, line)]}) with each
    line's arrival time from process start, and this child's own peak RSS (os.wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, events = [], []
    for line in proc.stdout:
        lines.append(line)
        events.append((time.perf_counter() - t0, line.rstrip()))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    log = "".join(lines)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: {log[-800:]}")
    return log, {
        "wall_s": wall,
        "maxrss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "events": events,
    }


def nanogpt_cmd(recipe: Recipe, max_iters: int, eval_iters: int = 1) -> list[str]:
    return [
        sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
        f"--eval_iters={eval_iters}", "--log_interval=1", *recipe.nanogpt_args, f"--max_iters={max_iters}",
    ]  # fmt: skip


def our_config(recipe: Recipe, dtype: str):
    from gpt_jax import run_config  # lazy: jax loads only when ours runs

    config = run_config.load_config(str(REPO / recipe.config))
    config.model.dtype = dtype
    config.sample.num_tokens = 0
    run_config.apply_cpu_devices(config)
    return config


def speed(ng: Path, recipe: Recipe, rounds: int, steps: int, dtype: str, out) -> dict:
    from benchmarks.train_throughput import StepTimer

    with tempfile.TemporaryDirectory() as workdir:
        config = our_config(recipe, dtype)
        config.train.steps_per_call = min(config.train.steps_per_call, steps)
        timer = StepTimer(config, workdir)
        out({"ours_compile_s": round(timer.compile_s, 2), "steps_per_call": timer.k})
        rows = []
        for r in range(rounds):
            log, run = run_timed(nanogpt_cmd(recipe, steps + 2), ng)
            ms = parse_step_ms(log)
            if not ms:
                raise RuntimeError(f"no `iter N: loss X, time T ms` lines in nanoGPT's log: {log[-400:]}")
            wall, cpu = timer.time(steps)
            row = {
                "round": r,
                "nanogpt_ms_per_step": statistics.median(ms),
                "ours_ms_per_step": wall * 1e3,
                "ours_cpu_ms_per_step": cpu * 1e3,
                "load_avg_1m": os.getloadavg()[0],
            }
            row["ratio"] = row["nanogpt_ms_per_step"] / row["ours_ms_per_step"]
            out(row)
            rows.append(row)
    ng_ms = statistics.median(r["nanogpt_ms_per_step"] for r in rows)
    our_ms = statistics.median(r["ours_ms_per_step"] for r in rows)
    return {
        "nanogpt_tokens_per_sec": recipe.tokens_per_step / ng_ms * 1e3,
        "ours_tokens_per_sec": recipe.tokens_per_step / our_ms * 1e3,
        "ratio_median_of_rounds": statistics.median(r["ratio"] for r in rows),
        "nanogpt_ms_per_step": ng_ms,
        "ours_ms_per_step": our_ms,
    }


def peak_rss(ng: Path, recipe: Recipe, steps: int, dtype: str) -> dict:
    """The main job (gpt_jax.main, the recipe's config, `steps` steps, its evals/checkpoint/sample) vs
    nanoGPT's train.py for as many iters, each in a fresh process."""
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [
            sys.executable, "-m", "gpt_jax.main", f"--config={REPO / recipe.config}", f"--workdir={workdir}/run",
            f"--config.train.num_steps={steps}", f"--config.model.dtype={dtype}",
        ]  # fmt: skip
        _, ours = run_timed(cmd, REPO)
    _, theirs = run_timed(nanogpt_cmd(recipe, steps, eval_iters=20), ng)
    return {
        "rss_steps": steps,
        "ours_maxrss_mb": ours["maxrss_mb"],
        "nanogpt_maxrss_mb": theirs["maxrss_mb"],
        "rss_ratio": ours["maxrss_mb"] / theirs["maxrss_mb"],
    }


def compile_cache_warm(config) -> bool:
    path = Path(os.path.expanduser(config.train.compile_cache_dir or "/nonexistent"))
    return path.is_dir() and any(path.iterdir())


def time_to_val(ng: Path) -> dict:
    """Ours: configs/shakespeare_speedrun.py from process start (its final val loss). nanoGPT: its CPU recipe."""
    from gpt_jax import run_config  # lazy: jax loads only when ours runs

    warm = compile_cache_warm(run_config.load_config(str(REPO / "configs/shakespeare_speedrun.py")))
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [
            sys.executable,
            "-m",
            "gpt_jax.main",
            "--config=configs/shakespeare_speedrun.py",
            f"--workdir={workdir}/r",
        ]
        _, ours = run_timed(cmd, REPO)
        val = json.loads((Path(workdir) / "r" / "summary.json").read_text()).get("val_loss")
    _, theirs = run_timed(nanogpt_cmd(RECIPES["cpu"], 2000, eval_iters=20), ng)
    evals = [(t, float(m.group(3))) for t, line in theirs["events"] if (m := EVAL.match(line))]
    hit = next(((t, v) for t, v in evals if v <= TARGET), evals[-1] if evals else (theirs["wall_s"], None))
    return {
        "ours_wall_s": ours["wall_s"],
        "ours_val_loss": val,
        "ours_compile_cache_warm": warm,
        "nanogpt_wall_s_to_val": hit[0],
        "nanogpt_val_loss": hit[1],
        "nanogpt_reached_target": hit[1] is not None and hit[1] <= TARGET,
        "nanogpt_wall_s_total": theirs["wall_s"],
        "time_ratio": ours["wall_s"] / hit[0],
    }


def main(argv) -> int:
    from gpt_jax.cli import flags  # lazy: keeps --help and bad flags fast

    F = flags.Flag
    spec = [
        F("nanogpt_dir", str, None, "nanoGPT checkout (unmodified)", required=True),
        F("recipe", str, "cpu", "cpu | gpu (nanoGPT's two shakespeare_char recipes)"),
        F("rounds", int, 3, "interleaved rounds"),
        F("steps", int, 0, "timed steps per round and side (0: the recipe's default)"),
        F("dtype", str, "float32", "our model.dtype: float32 | bfloat16"),
        F("rss", bool, False, "also peak RSS of the main job vs nanoGPT"),
        F("rss_steps", int, 2000, "steps of the --rss runs"),
        F("time_to_val", bool, False, "also time to val <= 1.88 (ours: speedrun config; nanoGPT: CPU recipe)"),
        F("no_speed", bool, False, "skip the interleaved speed rounds"),
    ]
    _, v = flags.parse(argv, spec, usage=USAGE)
    if v["recipe"] not in RECIPES:
        raise flags.UsageError(f"--recipe={v['recipe']!r} is not one of {sorted(RECIPES)}")
    if v["dtype"] not in ("float32", "bfloat16"):
        raise flags.UsageError(f"--dtype={v['dtype']!r} is not float32 or bfloat16")
    recipe = RECIPES[v["recipe"]]
    out = lambda d: print(json.dumps(d), flush=True)
    summary = {"recipe": v["recipe"], "dtype": v["dtype"], **host_info()}
    with tempfile.TemporaryDirectory() as tmp:
        ng = prepare_nanogpt(Path(v["nanogpt_dir"]).expanduser().resolve(), Path(tmp))
        if not v["no_speed"]:
            summary.update(speed(ng, recipe, v["rounds"], v["steps"] or recipe.steps, v["dtype"], out))
        if v["rss"]:
            summary.update(peak_rss(ng, recipe, v["rss_steps"], v["dtype"]))
        if v["time_to_val"]:
            summary.update(time_to_val(ng))
    out({"summary": summary})
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from gpt_jax.cli import flags  # lazy: only when run as a script

    sys.exit(flags.run(main, sys.argv[1:]))
