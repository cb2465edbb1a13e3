"""Saved configs from before PEFT options were nested per method, read as current ones.

Until then `config.peft` was flat (peft.rank, peft.lora_plus_ratio, peft.adapter_dim, peft.prefix_len,
...) and model_config.json carried adapter_dim / prefix_len / prefix_hidden, the PEFT modules having
been model fields. Every reader of a saved config.json, model_config.json or adapter-file metadata
passes it through `migrate_config` (or `migrate_peft` for a peft section alone), so old workdirs and
adapter files load; current files come back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# method -> {old flat key: its key in config.peft.<method>}
FLAT_KEYS: dict[str, dict[str, str]] = {
    "lora": {
        "targets": "targets",
        "rank": "rank",
        "alpha": "alpha",
        "dropout": "dropout",
        "lora_plus_ratio": "plus_ratio",
    },
    "adalora": {
        k: k
        for k in (
            "targets",
            "rank",
            "alpha",
            "dropout",
            "target_rank",
            "init_warmup",
            "final_warmup",
            "mask_interval",
            "beta1",
            "beta2",
            "orth_reg",
        )
    },
    "adapters": {"adapter_dim": "dim"},
    "prefix": {"prefix_len": "length", "prefix_hidden": "hidden"},
}
OLD_PEFT_KEYS = frozenset(k for keys in FLAT_KEYS.values() for k in keys)
OLD_MODEL_KEYS = ("adapter_dim", "prefix_len", "prefix_hidden")  # were ModelConfig fields


def migrate_peft(peft: Mapping[str, Any]) -> dict[str, Any]:
    """A peft section in the nested form. The flat keys the named method read go to its section; the
    other methods' flat keys were never read by the run and are dropped (kept, they would read as
    settings of sections the run never had)."""
    peft = dict(peft)
    flat = {k: peft.pop(k) for k in list(peft) if k in OLD_PEFT_KEYS and not isinstance(peft[k], Mapping)}
    method = peft.get("method") or "full"
    section = {new: flat[old] for old, new in FLAT_KEYS.get(method, {}).items() if old in flat}
    if section:
        peft[method] = {**section, **dict(peft.get(method) or {})}
    return peft


def migrate_config(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config.json or model_config.json dict as this code reads it: old model fields dropped
    (the PEFT method rebuilds its modules from config.peft), a flat peft section nested."""
    out = {k: v for k, v in saved.items() if k not in OLD_MODEL_KEYS}
    if isinstance(out.get("peft"), Mapping):
        out["peft"] = migrate_peft(out["peft"])
    return out
