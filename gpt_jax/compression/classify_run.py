"""Compressing classify runs (gpt_jax.tasks.classify): a GPT backbone and a small class head.

The backbone's matrices and tables are quantized / pruned exactly as an LM run's params are (keys
relative to the GPT tree, so `load_run` restores them as for any run); the class head ({"kernel":
[D, C], "bias": [C]}, a few KB) stays float32 and dense. The stored params keep the classify layout
{"backbone": ..., "head": ...}, so the output loads wherever a classify run loads. Full fine-tunes
only (peft.method=full, e.g. configs/finetune/sst2_scratch.py): there the backbone is the whole GPT.
"""

from __future__ import annotations

from gpt_jax.compression.stored import restore_params
from gpt_jax.models import registry as models
from gpt_jax.workdir import load_state, read_run

BACKBONE = "backbone"


def check(config, workdir) -> None:
    method = (config.get("peft") or {}).get("method") or "full"
    if method != "full":
        raise ValueError(
            f"--workdir={workdir} is a peft.method={method} classify run; compression takes full fine-tunes "
            "(peft.method=full, e.g. configs/finetune/sst2_scratch.py)"
        )


def load_params(workdir, *, step: int | None = None) -> tuple[dict, int]:
    """({"backbone": GPT params, "head": ...}, step) of the run's newest good checkpoint (or `step`); a
    quantized run's backbone in its in-memory form (int8 QuantizedTensor / dequantized float32)."""
    config, model_cfg = read_run(workdir)
    state = load_state(workdir, model_cfg, models.family_of(config.model), step=step)
    params = dict(state["params"])
    params[BACKBONE] = restore_params(workdir, params[BACKBONE])
    return params, int(state["step"])


def gpt_part(params, task: str):
    """The GPT tree compression works on: an LM run's params, a classify run's backbone."""
    return params[BACKBONE] if task == "classify" else params


def with_gpt_part(params, gpt, task: str):
    """`params` with its GPT tree replaced by `gpt` (the class head kept as it is)."""
    return {**params, BACKBONE: gpt} if task == "classify" else gpt
