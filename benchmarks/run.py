"""Every benchmark in one command: training tokens/s + MFU, decode tokens/s, peak memory.

  python -m benchmarks.run [--only=train,decode,memory] [--cases=NAME,...] [--quick] [--out=FILE] [--note=TEXT]
                           [--set key=value ...]

Prints a table per section and writes `benchmarks/results/<machine>.json` (machine = a slug of the
backend and the device kind or CPU model, e.g. `cpu-amd-epyc-2cpu`, `gpu-nvidia-h100-80gb-hbm3`)
with the date, jax version, git commit, device count and the peak FLOP/s each MFU is taken against.
A partial run (`--only`, `--cases`) replaces its own rows in the file and keeps the others; every
row records when and at which commit it was measured.

- train: the real train step (benchmarks.train_throughput.measure: the Trainer's sharded, jitted,
  donated scan of steps) of configs/shakespeare_char_cpu.py, configs/shakespeare_char.py and the
  GPT-2 124M recipe (configs/gpt2_124m.py on the local tiny Shakespeare bytes). On CPU the two big
  ones run a few steps at a small batch; on GPU/TPU every matmul is bf16.
- decode: gpt_jax.generate (benchmarks.decode.bench_jax, greedy, random weights) at batch 1 and 16
  for the CPU-recipe shape and GPT-2 124M.
- memory: each case's peak. CPU: the process's max RSS (resource.getrusage); GPU/TPU: the
  allocator's peak_bytes_in_use (device.memory_stats()). Both are process high-water marks, so
  every case runs in a fresh child process (`--child`): its peak is its own.

--quick: tiny shapes, in this process (memory is then this process's high-water mark); seconds,
for tests. It writes `<machine>-quick.json` unless --out is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
SECTIONS = ("train", "decode", "memory")

# name: (config file, timed steps on CPU / on GPU-TPU, CPU overrides, GPU/TPU overrides). The CPU
# overrides keep the default run in minutes on a 2-core host; the accelerator ones keep each
# recipe's own batch (GPT-2: 16 x 1024 tokens, not the recipe's 480 x 1024 of gradient accumulation).
TRAIN_CASES = {
    "shakespeare_char_cpu": ("configs/shakespeare_char_cpu.py", (60, 300), {}, {"train.steps_per_call": 10}),
    "shakespeare_char": (
        "configs/shakespeare_char.py",
        (3, 60),
        {"train.batch_size": 8},  # the recipe's 64 is ~17 s/step here
        {"train.steps_per_call": 10},
    ),
    "gpt2_124m": (
        "configs/gpt2_124m.py",
        (2, 30),
        {"train.batch_size": 1, "model.dtype": "float32"},  # no bf16 units on most CPUs: f32 is faster
        {"train.batch_size": 16},
    ),
}
# The GPT-2 recipe streams c4 through grain with a learned BPE; the benchmark needs only real tokens of the shape.
GPT2_DATA = {
    "data.dataset": "tiny_shakespeare",
    "data.tokenizer": "byte",
    "data.pipeline": "random",
    "data.vocab_size": None,
}
QUICK_TRAIN = {
    "model.n_layer": 1,
    "model.n_head": 2,
    "model.n_embd": 32,
    "model.block_size": 16,
    "train.batch_size": 2,
    "train.steps_per_call": 1,
}
DECODE_MODELS, DECODE_BATCHES = ("shakespeare", "gpt2"), (1, 16)
QUICK_DECODE_MODELS, QUICK_DECODE_BATCHES = ("tiny",), (1, 4)


# ----------------------------------------------------------------------------- the machine


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_info() -> dict:
    """Backend, device kind and count, CPU model, and the slug naming the results file."""
    import jax

    from gpt_jax.flops import cpu_count, cpu_model

    dev = jax.devices()[0]
    backend = dev.platform
    if backend == "cpu":  # one XLA CPU device whatever the cores: the core count tells hosts apart
        machine = f"cpu-{slug(cpu_model())}-{cpu_count()}cpu"
    else:
        machine = f"{backend}-{slug(dev.device_kind)}"
        if jax.device_count() > 1:
            machine += f"-x{jax.device_count()}"
    return {
        "machine": machine,
        "backend": backend,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
    }


def peak_memory() -> dict:
    """This process's peak so far: the max over devices of peak_bytes_in_use on GPU/TPU, max RSS on CPU."""
    import jax

    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    peaks = [s["peak_bytes_in_use"] for s in stats if "peak_bytes_in_use" in s]
    if peaks:
        return {"peak_bytes": max(peaks), "memory_source": "device peak_bytes_in_use (max over devices)"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return {"peak_bytes": rss * scale, "memory_source": "process max RSS"}


# ----------------------------------------------------------------------------- one case


def train_config(case: str, backend: str, quick: bool, sets: Sequence[tuple[str, str]] = ()):
    """The case's config with its backend's overrides (quick: tiny shapes), then the user's --set."""
    import jax

    from gpt_jax import run_config

    path, _, cpu, accel = TRAIN_CASES[case]
    config = run_config.load_config(str(REPO / path))
    overrides = dict(GPT2_DATA) if case == "gpt2_124m" else {}
    overrides.update(cpu if backend == "cpu" else {"model.dtype": "bfloat16", **accel})
    if quick:
        overrides.update(QUICK_TRAIN)
    overrides["sample.num_tokens"] = 0
    for key, value in overrides.items():
        run_config.set_override(config, key, repr(value) if not isinstance(value, str) else value)
    for key, value in sets:
        run_config.set_override(config, key, value)
    shards = jax.device_count()  # the batch is split over every device (data x fsdp)
    t = config.train
    t.batch_size = -(-t.batch_size // shards) * shards
    return config


def run_train_case(case: str, quick: bool, sets=(), steps: int | None = None) -> dict:
    import jax

    from benchmarks.train_throughput import measure

    backend = jax.default_backend()
    config = train_config(case, backend, quick, sets)
    steps = steps or (2 if quick else TRAIN_CASES[case][1][backend != "cpu"])
    row = {"case": case, "config": TRAIN_CASES[case][0]}
    t0 = time.perf_counter()
    row.update(measure(config, steps, rounds=1 if quick or steps < 3 else 3))
    row["wall_s"] = time.perf_counter() - t0
    return row


def run_decode_case(model: str, batches: Sequence[int], quick: bool) -> list[dict]:
    from benchmarks.decode import bench_jax

    return [bench_jax(model, b, repeats=3, min_total_s=0.2 if quick else 2.0) for b in batches]


def run_case(spec: dict) -> dict:
    """One case in this process: {"kind": "train"|"decode", ...} -> its rows, this process's peak
    memory, and the machine it ran on."""
    info = machine_info()
    start = peak_memory()["peak_bytes"]  # jax and its backend up, nothing of the case yet
    if spec["kind"] == "train":
        sets = [tuple(s) for s in spec.get("sets", [])]
        rows = [run_train_case(spec["case"], spec["quick"], sets, spec.get("steps"))]
    else:
        rows = run_decode_case(spec["case"], spec["batches"], spec["quick"])
    return {"rows": rows, **peak_memory(), "start_bytes": start, "info": info}


def run_child(spec: dict, env=None) -> dict:
    """run_case in a fresh `python -m benchmarks.run --child=SPEC`; {"error": ...} if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", f"--child={json.dumps(spec)}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"child exit {proc.returncode}: {tail}"}


# ----------------------------------------------------------------------------- the suite


def all_cases(quick: bool) -> list[str]:
    return [*TRAIN_CASES, *(QUICK_DECODE_MODELS if quick else DECODE_MODELS)]


def run_suite(
    sections: Sequence[str], quick: bool, sets=(), isolate: bool = True, cases: Sequence[str] | None = None, log=print
) -> tuple[dict, dict]:
    """({section: rows}, machine info); each case in a child process when `isolate`, else here.
    `cases`: train case and decode model names to run (default all).

    With isolation this process never starts a jax backend (a TPU admits one process at a time)."""
    cases = all_cases(quick) if cases is None else cases
    results: dict[str, list[dict]] = {s: [] for s in sections}
    info: dict = {}
    run = run_child if isolate else run_case
    memory = results.get("memory")

    def note_memory(case, what, out, state_bytes=None):
        if memory is not None and "peak_bytes" in out:
            memory.append(
                {
                    "case": case,
                    "what": what,
                    "peak_bytes": out["peak_bytes"],
                    "start_bytes": out["start_bytes"],
                    "state_bytes": state_bytes,
                    "memory_source": out["memory_source"],
                    "scope": "case (fresh process)" if isolate else "process high-water mark",
                }
            )

    if "train" in sections or "memory" in sections:
        for case in [c for c in TRAIN_CASES if c in cases]:
            log(f"train {case} ...")
            spec = {"kind": "train", "case": case, "quick": quick, "sets": list(sets)}
            if "train" not in sections:
                spec["steps"] = 1  # memory only: one compiled call and one timed step
            out = run(spec)
            info = info or out.get("info", {})
            if "error" in out:
                log(f"  FAILED: {out['error']}")
                if "train" in results:
                    results["train"].append({"case": case, "error": out["error"]})
                continue
            row = out["rows"][0]
            if "train" in results:
                results["train"].append(row)
            note_memory(case, "train step", out, row.get("state_bytes"))
    if "decode" in sections:
        models = QUICK_DECODE_MODELS if quick else DECODE_MODELS
        batches = QUICK_DECODE_BATCHES if quick else DECODE_BATCHES
        for model in [m for m in models if m in cases]:
            log(f"decode {model} ...")
            out = run({"kind": "decode", "case": model, "batches": list(batches), "quick": quick})
            info = info or out.get("info", {})
            if "error" in out:
                log(f"  FAILED: {out['error']}")
                results["decode"].append({"model": model, "error": out["error"]})
                continue
            results["decode"].extend(out["rows"])
            note_memory(f"decode {model}", f"generate, batch {max(batches)}", out)
    return results, info


# ----------------------------------------------------------------------------- output


def _fmt(x, spec=",.0f", scale=1.0) -> str:
    return "—" if x is None else format(x * scale, spec)


def _mib(x) -> str:
    return _fmt(x, ",.0f", 1 / 2**20)


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def train_table(rows) -> str:
    head = [
        "config",
        "shape",
        "batch x block",
        "dtype",
        "ms/step",
        "tokens/s",
        "GFLOP/s",
        "MFU",
        "peak GFLOP/s",
        "compile s",
    ]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["case"], "FAILED: " + r["error"]] + [""] * (len(head) - 2))
            continue
        body.append(
            [
                r["config"],
                str(r["shape"]),
                f"{r['batch_size']} x {r['block_size']}",
                r["dtype"],
                _fmt(r["ms_per_step"], ",.1f"),
                _fmt(r["tokens_per_sec"]),
                _fmt(r["gflops_per_sec"], ",.1f"),
                _fmt(r["mfu"], ".1%"),
                _fmt(r["peak_flops"], ",.0f", 1e-9),
                _fmt(r["compile_s"], ".1f"),
            ]
        )
    return table(head, body)


def decode_table(rows) -> str:
    head = ["model", "batch", "decode tokens/s", "ms/token", "prefill ms", "generate() tokens/s", "compile s"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], "FAILED: " + r["error"]] + [""] * (len(head) - 2))
            continue
        body.append(
            [
                r["model"],
                str(r["batch"]),
                _fmt(r["decode_tokens_per_sec"]),
                _fmt(r["ms_per_token"], ".2f"),
                _fmt(r["prefill_ms"], ".1f"),
                _fmt(r["api_end_to_end_tokens_per_sec"]),
                _fmt(r["compile_s"], ".1f"),
            ]
        )
    return table(head, body)


def memory_table(rows) -> str:
    head = ["case", "what", "peak MiB", "at start MiB", "train state MiB", "measured as"]
    body = [
        [
            r["case"],
            r["what"],
            _mib(r["peak_bytes"]),
            _mib(r["start_bytes"]),
            _mib(r["state_bytes"]),
            r["memory_source"],
        ]
        for r in rows
    ]
    return table(head, body)


TABLES = {"train": train_table, "decode": decode_table, "memory": memory_table}


def git_commit() -> dict:
    def git(*args):
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


def header(info: dict, quick: bool, argv: Sequence[str], note: str | None) -> dict:
    import jax
    import jaxlib

    return {
        **info,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "python": platform.python_version(),
        "git": git_commit(),
        "quick": quick,
        "command": "python -m benchmarks.run " + " ".join(argv),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "note": note,
    }


def peak_flops_used(train_rows) -> dict:
    """Per-device peak FLOP/s each dtype's MFU was taken against (CPU: measured in each case's process)."""
    out: dict[str, list[float]] = {}
    for r in train_rows:
        if "peak_flops" in r:
            out.setdefault(r["dtype"], []).append(r["peak_flops"] / r["devices"])
    return {dtype: sorted(v)[len(v) // 2] for dtype, v in out.items()}


ROW_KEYS = {"train": ("case",), "decode": ("model", "batch"), "memory": ("case",)}


def row_key(section: str, row: dict) -> tuple:
    return tuple(row.get(k) for k in ROW_KEYS[section])


def write_results(path: pathlib.Path, head: dict, results: dict) -> dict:
    """Merge into `path`: this run's rows replace the file's rows of the same case, the others stay.

    Every row carries the date and commit it was measured at (a file may mix runs of --only/--cases)."""
    doc = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            doc = {}
    old = {section: doc.get(section, []) for section in SECTIONS}
    doc.update(head)
    stamp = {"date": head["date"], "commit": head["git"]["commit"], "note": head["note"]}
    for section, rows in results.items():
        new = [{**r, **stamp} for r in rows]
        fresh = {row_key(section, r) for r in new}
        kept = [r for r in old[section] if isinstance(r, dict) and row_key(section, r) not in fresh]
        doc[section] = kept + new
    doc["peak_flops_per_device"] = peak_flops_used(doc.get("train", []))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return doc


# ----------------------------------------------------------------------------- CLI

USAGE = "usage: python -m benchmarks.run [--only=train,decode,memory] [--quick] [--out=FILE] [--set key=value ...]"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        print(f"error: {message}; {USAGE}", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--only", action="append", default=[], help="sections: train, decode, memory (comma list or repeat)")
    p.add_argument(
        "--cases", help="comma list of train cases / decode models (default all; see TRAIN_CASES, DECODE_MODELS)"
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes in this process (seconds; for tests)")
    p.add_argument("--out", help="results JSON (default benchmarks/results/<machine>[-quick].json)")
    p.add_argument("--note", help="free text stored with the results, e.g. what else was running")
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every train case",
    )
    p.add_argument(
        "--isolate",
        choices=("auto", "yes", "no"),
        default="auto",
        help="a child process per case (auto: unless --quick)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one case, print its JSON
    return p


def parse_sections(only: Sequence[str]) -> list[str]:
    names = [s.strip() for item in only for s in item.split(",") if s.strip()] or list(SECTIONS)
    for name in names:
        if name not in SECTIONS:
            raise ValueError(f"--only={name!r} is not a section; choose from {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in names]


def parse_cases(text: str | None, quick: bool) -> list[str] | None:
    if not text:
        return None
    names, known = [c.strip() for c in text.split(",") if c.strip()], all_cases(quick)
    for name in names:
        if name not in known:
            raise ValueError(
                f"--cases={name!r} is not a case{' in --quick' if quick else ''}; choose from {', '.join(known)}"
            )
    return names


def parse_sets(sets: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for spec in sets:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {spec!r} is not KEY=VALUE; e.g. --set train.peak_flops=1e11")
        out.append((key.strip(), value.strip()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.child:
        print(json.dumps(run_case(json.loads(args.child))), flush=True)
        return 0
    try:
        sections, sets = parse_sections(args.only), parse_sets(args.set)
        cases = parse_cases(args.cases, args.quick)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    isolate = {"yes": True, "no": False, "auto": not args.quick}[args.isolate]
    if isolate:  # this process only coordinates: leave the accelerator's memory to the children
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    t0 = time.perf_counter()
    results, info = run_suite(sections, args.quick, sets, isolate=isolate, cases=cases)
    info = info or machine_info()  # every case failed: ask here (the children are done)
    head = header(info, args.quick, argv, args.note)
    head["wall_s"] = round(time.perf_counter() - t0, 1)
    name = f"{info['machine']}{'-quick' if args.quick else ''}.json"
    out = pathlib.Path(args.out) if args.out else RESULTS_DIR / name
    write_results(out, head, results)
    print(
        f"\n{info['machine']}: {info['device_count']} x {info['device_kind']} ({info['cpu_model']}), "
        f"jax {head['jax_version']}, commit {(head['git']['commit'] or '?')[:10]}, {head['wall_s']:.0f} s"
    )
    for section in sections:
        print(f"\n{section}\n{TABLES[section](results[section])}")
    print(f"\nwrote {out}")
    failed = [r for rows in results.values() for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
