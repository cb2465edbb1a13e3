"""Checks on a run config made before anything is written: value ranges, and what a resume may change.

Every error is one line naming the key, the value, what is allowed and how to fix it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

# dotted key -> (test, what is allowed). A key a config lacks (an older config.json) is not checked;
# None passes (optional keys). Ranges are what the code can run, not what is sensible.
_Range = tuple[Callable[[Any], bool], str]
_at_least = lambda n: (lambda v: v >= n, f">= {n}")
_above = lambda n: (lambda v: v > n, f"> {n}")
_unit = (lambda v: 0 <= v < 1, "in [0, 1)")
_fraction = (lambda v: 0 <= v <= 1, "in [0, 1]")

RANGES: dict[str, _Range] = {
    "seed": _at_least(0),
    "model.vocab_size": _at_least(1),
    "model.block_size": _at_least(1),
    "model.n_layer": _at_least(1),
    "model.n_head": _at_least(1),
    "model.n_kv_head": _at_least(1),
    "model.n_embd": _at_least(1),
    "model.d_ff": _at_least(1),
    "model.dropout": _unit,
    "model.norm_eps": _above(0),
    "data.grain_workers": _at_least(0),
    "data.packing_bins": _at_least(1),
    "data.tokenizer_sample_chars": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.num_steps": _at_least(1),
    "train.grad_accum": _at_least(1),
    "train.steps_per_call": _at_least(1),
    "train.log_every": _at_least(1),
    "train.eval_every": _at_least(0),
    "train.eval_batches": _at_least(1),
    "train.max_nonfinite_skips": _at_least(0),
    "train.peak_flops": _above(0),
    "optim.lr": _above(0),
    "optim.min_lr": _at_least(0),
    "optim.warmup_steps": _at_least(0),
    "optim.decay_steps": _at_least(1),
    "optim.b1": _unit,
    "optim.b2": _unit,
    "optim.eps": _above(0),
    "optim.weight_decay": _at_least(0),
    "optim.clip": _at_least(0),
    "optim.muon_ns_steps": _at_least(1),
    "mesh.cpu_devices": _at_least(0),
    "checkpoint.every": _at_least(0),
    "checkpoint.keep": _at_least(1),
    "sample.num_tokens": _at_least(0),
    "sample.temperature": _at_least(0),
    "sample.top_k": _at_least(0),
    "objectives.fim.fim_rate": _fraction,
    "objectives.fim.spm_rate": _fraction,
    "objectives.mlm.mask_rate": _fraction,
    "objectives.mlm.mask_token_rate": _fraction,
    "objectives.mlm.random_token_rate": _fraction,
    "task.max_len": _at_least(1),
    "task.patience": _at_least(0),
    "peft.lora.rank": _at_least(1),
    "peft.lora.alpha": _above(0),
    "peft.lora.dropout": _unit,
    "peft.lora.plus_ratio": _above(0),
    "peft.adalora.rank": _at_least(1),
    "peft.adalora.target_rank": _at_least(1),
    "peft.adalora.alpha": _above(0),
    "peft.adalora.dropout": _unit,
    "peft.adalora.init_warmup": _fraction,
    "peft.adalora.final_warmup": _fraction,
    "peft.adalora.mask_interval": _at_least(1),
    "peft.adalora.beta1": _unit,
    "peft.adalora.beta2": _unit,
    "peft.adalora.orth_reg": _at_least(0),
    "peft.adapters.dim": _at_least(1),
    "peft.prefix.length": _at_least(1),
    "peft.prefix.hidden": _at_least(0),
}

# What a resume may change without `train.allow_changes`: cadence, hardware, paths and reporting. Any
# other key changes the trajectory (seed, data, batch, objective, optimizer and schedule, task, PEFT).
# The model's shape is checked apart (run_config.check_model), and train.num_steps changes the
# trajectory only through the schedule (see effective_schedule).
RESUMABLE_PREFIXES = ("mesh.", "checkpoint.", "sample.")
RESUMABLE_KEYS = {
    "train.num_steps",
    "train.steps_per_call",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.peak_flops",
    "train.compile_cache_dir",
    "train.allow_changes",
    "train.on_nonfinite",
    "train.max_nonfinite_skips",
    "gan.grid_every",  # how often a GAN writes its sample grid: reporting only
    "data.manual_dir",
    "data.tfds_dir",
    "data.shards_dir",
    "task.patience",
    "task.early_stop_metric",
}


def _get(config: Mapping, dotted: str):
    node = config
    for name in dotted.split("."):
        if not hasattr(node, "keys") or name not in node:  # dicts and ConfigDicts
            return KeyError
        node = node[name]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError (one line) on the first value out of its range."""
    for dotted, (ok, allowed) in RANGES.items():
        value = _get(config, dotted)
        if value is KeyError or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not ok(value):
            raise ValueError(
                f"config.{dotted}={value!r} is out of range: it must be a number {allowed}; "
                f"pass --config.{dotted}=<a value {allowed}>"
            )
    o = config.optim  # batch_size vs grad_accum and the mesh: gpt_jax.trainer.Trainer checks those
    if (o.get("min_lr") or 0.0) > o.lr:
        raise ValueError(
            f"config.optim.min_lr={o.min_lr} is above optim.lr={o.lr}; the schedule decays to min_lr, set it <= lr"
        )


def flatten(config: Mapping | ml_collections.ConfigDict) -> dict[str, Any]:
    """{dotted key: value} of a config as JSON would hold it (so saved and new compare alike)."""
    if isinstance(config, ml_collections.ConfigDict):
        config = json.loads(config.to_json_best_effort())
    out: dict[str, Any] = {}

    def walk(node, prefix):
        for k, v in node.items():
            if hasattr(v, "keys") and len(v.keys()):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(config, "")
    return out


def effective_schedule(flat: Mapping[str, Any]) -> int | None:
    """The step the lr schedule decays to: optim.decay_steps, or train.num_steps when that is unset."""
    return flat.get("optim.decay_steps") or flat.get("train.num_steps")


def trajectory_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (saved, new)} for every change a resume would make to the training trajectory.

    Both are flattened configs. Keys the saved config lacks (added to the code since) are not compared.
    """
    changes = {}
    for key, old in saved.items():
        if key in RESUMABLE_KEYS or key.startswith(RESUMABLE_PREFIXES) or key.startswith("model."):
            continue
        if key in new and new[key] != old:
            changes[key] = (old, new[key])
    old_horizon, new_horizon = effective_schedule(saved), effective_schedule(new)
    if old_horizon != new_horizon and "optim.decay_steps" not in changes:
        changes["lr schedule length (optim.decay_steps, else train.num_steps)"] = (old_horizon, new_horizon)
    return changes
