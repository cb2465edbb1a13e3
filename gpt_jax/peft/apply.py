"""A saved adapter file put on top of a base model, for use without its training run."""

from __future__ import annotations

from gpt_jax.peft import io, make_method
from gpt_jax.tasks.backbone import load_base


def apply_adapter(adapter_file, base):
    """(model config, GPT params, tokenizer, task head or None): a saved adapter file put on top of the
    base in `base` (a gpt_jax workdir or HF GPT-2 folder), which may be another copy than it was trained on.
    An adapter trained on a base of other shapes is refused with the first differing parameter."""
    base_cfg, load_params, tokenizer = load_base(str(base))
    params = load_params()
    method_name, peft_cfg, trainable = io.load_adapter(adapter_file, io.base_shapes(params))
    method = make_method({**peft_cfg, "method": method_name}, 1)
    return (
        method.model_config(base_cfg),
        method.combine(trainable["backbone"], params),
        tokenizer,
        trainable.get("head"),
    )
