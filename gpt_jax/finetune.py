"""Fine-tuning entry point: the pretraining trainer, configs and checkpoints, on a fine-tuning task.

  python -m gpt_jax.finetune --config=configs/finetune/sst2_lora.py --init_from=runs/sst2_base \
      --workdir=runs/sst2_lora [--config.peft.rank=16 ...]

--init_from is a gpt_jax workdir or a Hugging Face GPT-2 folder (only its params and tokenizer are
taken; optimizer state starts fresh). Omit it to train the task from scratch. Resuming: run the same
command again; the workdir's own checkpoint wins over --init_from.
"""

from __future__ import annotations

import sys


from gpt_jax import main as main_lib


def main(argv: list[str]) -> int:
    rest, init_from = [], None
    for arg in argv:
        if arg.startswith("--init_from="):
            init_from = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if init_from:
        rest.append(f"--config.init_from={init_from}")
    return main_lib.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def apply_adapter(adapter_file, base):
    """(model config, GPT params, tokenizer, task head or None): a saved adapter file put on top of the
    base in `base` (a gpt_jax workdir or HF GPT-2 folder), which may be another copy than it was trained on.
    An adapter trained on a base of other shapes is refused with the first differing parameter."""
    from gpt_jax.peft import io, make_method
    from gpt_jax.tasks.backbone import load_base

    base_cfg, load_params, tokenizer = load_base(str(base))
    params = load_params()
    method_name, peft_cfg, trainable = io.load_adapter(adapter_file, io.base_shapes(params))
    method = make_method({**peft_cfg, "method": method_name}, 1)
    return method.model_config(base_cfg), method.combine(trainable["backbone"], params), tokenizer, trainable.get("head")
