"""Compress a trained run into a new workdir (the source is never modified; the output appears whole):

  python -m gpt_jax.compress quantize --workdir=W --out=W8 --bits=8 [--group_size=64] [--method=absmax|gptq]
                                      [--act_bits=8]
  python -m gpt_jax.compress prune --workdir=W --out=WP --sparsity=0.5 [--pattern=2:4] [--scope=layer|global]
                                   [--finetune_steps=N] [--finetune_lr=3e-4] [--gradual_steps=M --mask_every=k]

The output loads in sample, chat, evaluate and generation like any run. Prints one JSON line.
Classify runs (peft.method=full) too: their GPT backbone is compressed, the class head stays float32
(gpt_jax.compression.classify_run); GPTQ calibrates on their training sentences, the pruned fine-tune
trains on the classification loss; `python -m gpt_jax.evaluate --workdir=OUT` gives their accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence

import numpy as np

from gpt_jax.cli import flags
from gpt_jax.compression import classify_run, stored
from gpt_jax.compression import prune as prune_lib
from gpt_jax.compression import quantize as quant_lib
from gpt_jax.compression.calibrate import collect_hessians
from gpt_jax.compression.finetune import finetune
from gpt_jax.compression.gradual import GradualSchedule
from gpt_jax.compression.prune_task import finetune_config
from gpt_jax.run_config import task_name
from gpt_jax.workdir import load_run_at, read_run

USAGE = "usage: python -m gpt_jax.compress quantize|prune --workdir=W --out=DIR [options] (--help per command)"
COMMON = [
    flags.Flag("workdir", help="the trained run to compress (read only)", required=True),
    flags.Flag("out", help="the new workdir to write (must not exist)", required=True),
]
QUANTIZE = COMMON + [
    flags.Flag("bits", int, 8, "8 (int8) or 4 (packed int4)"),
    flags.Flag("group_size", int, 0, "input features per scale; 0: one scale per output channel"),
    flags.Flag("method", str, "absmax", "absmax | gptq (calibrated on the run's training data)"),
    flags.Flag("calibration_windows", int, 128, "gptq: training windows of block_size tokens"),
    flags.Flag(
        "act_bits", int, 0, "8: W8A8 (activations quantized per token at run time; needs --bits=8, per channel)"
    ),
]
PRUNE = COMMON + [
    flags.Flag("sparsity", float, None, "fraction of each matrix's weights set to zero, in [0, 1)"),
    flags.Flag("pattern", str, "", "N:M structured pruning, e.g. 2:4 (implies sparsity 1 - N/M)"),
    flags.Flag("scope", str, "layer", "unstructured: layer (per matrix) | global (one threshold)"),
    flags.Flag("finetune_steps", int, 0, "masked fine-tune steps on the run's training data (0: none)"),
    flags.Flag("finetune_lr", float, 3e-4, "fine-tune peak learning rate (cosine to a tenth)"),
    flags.Flag("gradual_steps", int, 0, "prune gradually (cubic ramp 0 -> sparsity) over the first N fine-tune steps"),
    flags.Flag("mask_every", int, 10, "gradual: recompute the masks every k steps"),
]


def _source(workdir):
    """(config, model config, params, step, task name): an LM run's GPT params, or a classify run's
    {"backbone", "head"} (classify_run.gpt_part picks the tree to compress)."""
    config, model_cfg = read_run(workdir)
    task = task_name(config)
    if task not in ("lm", "qat", "classify"):
        raise ValueError(f"--workdir={workdir} is a {task} run; compression takes language-model and classify runs")
    if stored.quant_record(workdir) is not None:
        raise ValueError(f"--workdir={workdir} is already quantized; compress the float run")
    if task == "classify":
        classify_run.check(config, workdir)
        params, step = classify_run.load_params(workdir)
        return config, model_cfg, params, step, task
    config, model_cfg, params, _, step = load_run_at(workdir)
    return config, model_cfg, params, step, task


def calibration_rows(config, workdir, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(`n` training rows [n, L] of the run's own task, in its batch order; their real lengths [n], or
    None where every position is text: a classifier's rows are sentences padded to task.max_len)."""
    from gpt_jax.tasks.registry import make_task  # lazy: builds the dataset, only GPTQ needs it

    task = make_task(config, workdir)  # make_task keeps a gs:// workdir intact
    per_step = config.train.batch_size
    got = task.train_batches(0, -(-n // per_step), 0, 1)
    rows = got["inputs"].reshape(-1, got["inputs"].shape[-1])[:n]
    lengths = got.get("lengths")
    return rows, None if lengths is None else lengths.reshape(-1)[:n]


def quantize(argv: Sequence[str]) -> int:
    _, v = flags.parse(argv, QUANTIZE, usage=USAGE)
    spec = quant_lib.QuantSpec(v["bits"], v["group_size"], v["method"])
    if v["act_bits"] not in (0, 8) or (v["act_bits"] and (spec.bits != 8 or spec.group_size)):
        raise ValueError(
            f"--act_bits={v['act_bits']}: use 0, or 8 with --bits=8 and per-channel scales (no --group_size)"
        )
    src, dst = stored.check_paths(v["workdir"], v["out"])
    t0 = time.perf_counter()
    config, model_cfg, params, step, task = _source(src)
    gpt = classify_run.gpt_part(params, task)
    quant_lib.check(gpt, spec)  # grouping errors before the calibration pass
    hessians = None
    if spec.method == "gptq":
        windows, lengths = calibration_rows(config, src, v["calibration_windows"])
        hessians = collect_hessians(model_cfg, gpt, windows, lengths_N=lengths)
    stored_gpt, records = quant_lib.quantize_params(gpt, spec, hessians)
    stored_params = classify_run.with_gpt_part(params, stored_gpt, task)
    record = {"bits": spec.bits, "group_size": spec.group_size, "method": spec.method, "source": str(src)}
    if task == "classify":
        record["task"] = "classify (the backbone quantized; the class head float32)"
    if v["act_bits"]:
        record["act_bits"] = v["act_bits"]
    if spec.method == "gptq":
        record["calibration_windows"] = int(v["calibration_windows"])
    stored.write_workdir(src, dst, stored_params, step, {stored.QUANT_FILE: {**record, "matrices": records}})
    out = {"out": str(dst), **record, "weight_bytes": stored.weight_bytes(dst), "seconds": time.perf_counter() - t0}
    print(json.dumps(out))
    return 0


def prune(argv: Sequence[str]) -> int:
    _, v = flags.parse(argv, PRUNE, usage=USAGE)
    sparsity = prune_lib.check_sparsity(v["sparsity"], v["pattern"] or None)
    if v["scope"] not in prune_lib.SCOPES:
        raise ValueError(f"--scope={v['scope']!r} is not one of {list(prune_lib.SCOPES)}")
    if v["finetune_steps"] < 0:
        raise ValueError(f"--finetune_steps={v['finetune_steps']} must be >= 0")
    if v["gradual_steps"]:
        if not 0 < v["gradual_steps"] <= v["finetune_steps"]:
            raise ValueError(f"--gradual_steps={v['gradual_steps']} must be in [1, --finetune_steps]")
        GradualSchedule(sparsity, v["gradual_steps"], v["mask_every"])  # its one-line errors, before any work
        if v["pattern"] or v["scope"] != "layer":
            raise ValueError("--gradual_steps prunes unstructured per matrix: drop --pattern / --scope=global")
    src, dst = stored.check_paths(v["workdir"], v["out"])
    t0 = time.perf_counter()
    config, _, params, step, task = _source(src)
    if not v["gradual_steps"]:
        gpt = classify_run.gpt_part(params, task)
        masks = prune_lib.magnitude_masks(gpt, sparsity, scope=v["scope"], pattern=v["pattern"] or None)
        params = classify_run.with_gpt_part(params, prune_lib.apply_masks(gpt, masks), task)
    record = {"sparsity": sparsity, "pattern": v["pattern"], "scope": v["scope"], "source": str(src)}
    if task == "classify":
        record["task"] = "classify (the backbone pruned; the class head dense)"
    if v["gradual_steps"]:
        record["gradual"] = {"steps": v["gradual_steps"], "mask_every": v["mask_every"], "schedule": "cubic"}
    if v["finetune_steps"]:
        scratch = dst.parent / f".{dst.name}.finetune-{os.getpid()}"
        ft = finetune_config(
            src,
            sparsity=sparsity,
            pattern=v["pattern"],
            scope=v["scope"],
            steps=v["finetune_steps"],
            lr=v["finetune_lr"],
            gradual_steps=v["gradual_steps"],
            mask_every=v["mask_every"],
        )
        try:
            params, summary = finetune(src, scratch, ft)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        step += v["finetune_steps"]
        record["finetune"] = {"steps": v["finetune_steps"], "lr": v["finetune_lr"], "val_loss": summary.get("val_loss")}
        if "val_accuracy" in summary:
            record["finetune"]["val_accuracy"] = summary["val_accuracy"]
    record["report"] = prune_lib.report(classify_run.gpt_part(params, task))
    stored.write_workdir(src, dst, params, step, {stored.PRUNE_FILE: record})
    rep = record["report"]
    print(
        json.dumps(
            {
                "out": str(dst),
                "sparsity": sparsity,
                "pattern": v["pattern"],
                "prunable_sparsity": rep["prunable_sparsity"],
                "total_sparsity": rep["total_sparsity"],
                "finetune": record.get("finetune"),
                "seconds": time.perf_counter() - t0,
            }
        )
    )
    return 0


COMMANDS = {"quantize": quantize, "prune": prune}


def compress(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("--help", "-h"):
            raise SystemExit(print(__doc__))
        got = repr(argv[0]) if argv else "nothing"
        raise flags.UsageError(f"the first argument must be quantize or prune, got {got}; {USAGE}")
    return COMMANDS[argv[0]](argv[1:])


def main(argv: Sequence[str]) -> int:
    return flags.run(compress, argv, workdir_hint=lambda: flags.value_of(argv, "out"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
