"""Where a config's train step spends its time on XLA:CPU, by op class, from a jax.profiler trace.

  python -m benchmarks.profile_step --config=configs/shakespeare_char_cpu.py [--config.x=y ...] [--steps=20] [--top=15]

Compiles the Trainer's real K-step call, traces `--steps` steps, and sums the trace's per-thunk events
(named after the compiled HLO instructions) by class: matmul (any fusion holding a dot), optimizer
(ops outside the model's forward/backward), softmax (exp), norm (rsqrt), gelu (tanh), transpose/copy
(pure data movement), other elementwise. Prints one JSON line: the class table (ms per step, share),
the top instructions, and wall vs CPU time per step (under load, shares are what to read).
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import sys
import tempfile
from pathlib import Path

USAGE = "usage: python -m benchmarks.profile_step --config=configs/<name>.py [--config.x=y ...] [--steps=20] [--top=15]"
INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?\s([a-z][\w\-]*)\((.*)$")
COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")
ARITH = {"add", "multiply", "subtract", "divide", "exponential", "rsqrt", "tanh", "maximum", "minimum", "reduce"}


def parse_hlo(text: str) -> tuple[dict, dict]:
    """({instruction: (opcode, called computation | None, op_name)}, {computation: Counter of opcodes})."""
    instrs, comps, current = {}, {}, None
    for line in text.splitlines():
        if not line.startswith(" ") and (m := COMP.match(line)) and line.rstrip().endswith("{"):
            current = comps.setdefault(m.group(1), collections.Counter())
            continue
        m = INSTR.match(line)
        if not m:
            continue
        name, op, rest = m.groups()
        if current is not None:
            current[op] += 1
        calls = re.search(r"calls=%([\w.\-]+)", rest)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        instrs[name] = (op, calls.group(1) if calls else None, op_name.group(1) if op_name else "")
    return instrs, comps


def classify(op: str, called: collections.Counter, op_name: str) -> str:
    ops = called or collections.Counter({op: 1})
    if ops["dot"] or ops["convolution"] or ops["custom-call"] and "matmul" in op_name:
        return "matmul"
    in_model = "jvp(" in op_name
    if op_name and not in_model and "closed_call" in op_name:
        return "optimizer"
    if ops["exponential"]:
        return "softmax"
    if ops["rsqrt"] or "/ln_" in op_name:
        return "norm"
    if ops["tanh"]:
        return "gelu"
    if (ops["transpose"] or ops["copy"] or op in ("copy", "transpose")) and sum(ops[a] for a in ARITH) <= 2:
        return "transpose/copy"
    if op in ("while", "call", "conditional", "tuple", "get-tuple-element", "parameter", "bitcast"):
        return "control"
    return "other"


def trace_durations(trace_dir: Path, names: set[str]) -> collections.Counter:
    """Total microseconds per HLO instruction over every event of the trace."""
    total = collections.Counter()
    for f in trace_dir.rglob("*.trace.json.gz"):
        with gzip.open(f) as fh:
            events = json.load(fh).get("traceEvents", [])
        for e in events:
            if e.get("ph") == "X" and e.get("name") in names:
                total[e["name"]] += e.get("dur", 0)
    return total


def profile(config, steps: int, top: int) -> dict:
    import jax

    from benchmarks.train_throughput import StepTimer

    with tempfile.TemporaryDirectory() as workdir:
        timer = StepTimer(config, workdir)
        batch = timer.tr.batches(0, timer.k)
        with timer.tr.rules():
            text = timer.tr.train_fn.lower(timer.state, batch).compile().as_text()
        timer.time(steps)  # warm
        trace = Path(workdir) / "trace"
        jax.profiler.start_trace(str(trace))
        wall, cpu = timer.time(steps)
        jax.profiler.stop_trace()
        instrs, comps = parse_hlo(text)
        durs = trace_durations(trace, set(instrs))
    n = max(1, steps // timer.k) * timer.k
    by_class, top_rows = collections.Counter(), []
    for name, us in durs.most_common():
        op, calls, op_name = instrs[name]
        cls = classify(op, comps.get(calls), op_name)
        by_class[cls] += us
        if len(top_rows) < top:
            top_rows.append({"instr": name, "class": cls, "ms_per_step": us / n / 1e3, "op_name": op_name[-90:]})
    total = sum(by_class.values()) or 1
    table = {c: {"ms_per_step": us / n / 1e3, "share": us / total} for c, us in by_class.most_common()}
    return {
        "wall_ms_per_step": wall * 1e3,
        "cpu_ms_per_step": cpu * 1e3,
        "traced_ms_per_step": total / n / 1e3,
        "classes": table,
        "top": top_rows,
    }


def main(argv) -> int:
    from gpt_jax import run_config  # lazy: keeps --help fast
    from gpt_jax.cli import flags  # lazy: keeps --help fast

    spec = [flags.Flag("steps", int, 20, "traced steps"), flags.Flag("top", int, 15, "top instructions listed")]
    config, v = flags.parse(argv, spec, usage=USAGE, config=True)
    config.sample.num_tokens = 0
    run_config.apply_cpu_devices(config)
    print(
        json.dumps({"config": [a for a in argv if a.startswith("--config")], **profile(config, v["steps"], v["top"])})
    )
    return 0


if __name__ == "__main__":
    from gpt_jax.cli import flags  # lazy: only when run as a script

    sys.exit(flags.run(main, sys.argv[1:]))
