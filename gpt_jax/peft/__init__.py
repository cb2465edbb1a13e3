"""Parameter-efficient fine-tuning: `make_method(config.peft, num_steps)` -> a `Method` (see base.py).

full / frozen: gpt_jax.peft.base; lora / adalora: weight-space low-rank deltas (lora.py, adalora.py);
adapters / prefix: extra backbone modules (adapters.py, prefix.py). Adapter files: gpt_jax.peft.io.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax

from gpt_jax.peft.base import Frozen, Full, Method

METHODS = ("full", "frozen", "lora", "adalora", "adapters", "prefix")


def make_method(peft: Mapping[str, Any], num_steps: int) -> Method:
    """The method named by peft['method'], configured from the other peft.* keys (configs/base.py)."""
    name = peft.get("method", "full") if hasattr(peft, "get") else peft["method"]
    if name == "full":
        return Full()
    if name == "frozen":
        return Frozen()
    if name == "lora":
        from gpt_jax.peft.lora import LoRA

        return LoRA.from_config(peft, num_steps)
    if name == "adalora":
        from gpt_jax.peft.adalora import AdaLoRA

        return AdaLoRA.from_config(peft, num_steps)
    if name == "adapters":  # lazy: these modules import model-side code of their own
        from gpt_jax.peft.adapters import Adapters

        return Adapters.from_config(peft, num_steps)
    if name == "prefix":
        from gpt_jax.peft.prefix import PrefixTuning

        return PrefixTuning.from_config(peft, num_steps)
    raise ValueError(f"peft.method={name!r} is not one of {METHODS}; set config.peft.method to one of them")


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
