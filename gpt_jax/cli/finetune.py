"""Fine-tune: the pretraining trainer, configs and checkpoints, on a fine-tuning task.

  python -m gpt_jax.finetune --config=configs/finetune/sst2_lora.py --init_from=runs/sst2_base \
      --workdir=runs/sst2_lora [--config.peft.lora.rank=16 ...]

--init_from is a gpt_jax workdir or a Hugging Face GPT-2 folder (only its params and tokenizer are
taken; optimizer state starts fresh). Omit it to train the task from scratch. Resuming: run the same
command again; the workdir's own checkpoint wins over --init_from.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gpt_jax.cli import flags
from gpt_jax.cli.train import SPEC, train

USAGE = (
    "usage: python -m gpt_jax.finetune --config=configs/finetune/<name>.py [--init_from=<workdir or HF dir>] "
    "--workdir=DIR [--config.<key>=<value> ...]"
)
FINETUNE_SPEC = [*SPEC, flags.Flag("init_from", help="base model: a gpt_jax workdir or a Hugging Face GPT-2 folder")]


def _init_from(config, values) -> None:
    if values["init_from"]:
        config.init_from = values["init_from"]


def main(argv: Sequence[str]) -> int:
    return flags.run(
        lambda a: train(a, FINETUNE_SPEC, USAGE, prepare=_init_from),
        argv,
        workdir_hint=lambda: flags.value_of(argv, "workdir"),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
