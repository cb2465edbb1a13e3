"""Parameter-efficient fine-tuning: `make_method(config.peft, num_steps)` -> a `Method` (see base.py).

full / frozen: gpt_jax.peft.base; lora / adalora: weight-space low-rank deltas (lora.py, adalora.py);
adapters / prefix: extra modules in the model's extension slots (adapters.py, prefix.py). Each method
reads its own config section, config.peft.<name>. Adapter files: gpt_jax.peft.io; configs saved
before the sections existed: gpt_jax.peft.legacy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax

from gpt_jax.peft.adalora import AdaLoRA
from gpt_jax.peft.adapters import Adapters
from gpt_jax.peft.base import Frozen, Full, Method
from gpt_jax.peft.lora import LoRA
from gpt_jax.peft.prefix import PrefixTuning

METHODS: dict[str, Any] = {m.name: m for m in (Full, Frozen, LoRA, AdaLoRA, Adapters, PrefixTuning)}


def make_method(peft: Mapping[str, Any], num_steps: int) -> Method:
    """The method named by peft['method'] (default full), built from its section peft[<method>]."""
    name = peft.get("method") or "full"
    if name not in METHODS:
        raise ValueError(f"peft.method={name!r} is not one of {tuple(METHODS)}; set config.peft.method to one of them")
    return METHODS[name].from_config(peft.get(name), num_steps)


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


def trainable_summary(trainable, frozen) -> dict[str, Any]:
    """{'trainable_params', 'total_params', 'trainable_pct'}: total counts both trees (HF's print_trainable_parameters)."""
    n_train, n_frozen = _count(trainable), _count(frozen)
    total = n_train + n_frozen
    return {
        "trainable_params": n_train,
        "total_params": total,
        "trainable_pct": 100.0 * n_train / total if total else 0.0,
    }
