"""Instruction tuning (SFT) on the 175 Alpaca seed tasks with LoRA: ChatML-rendered examples, loss on
the replies only, several examples packed per row with attention kept inside each.

Run:      python -m gpt_jax.finetune --config=configs/finetune/alpaca_sft.py --init_from=<workdir or HF GPT-2 dir> \
              --workdir=runs/alpaca_sft
          then: python -m gpt_jax.chat --workdir=runs/alpaca_sft --template=chatml (LoRA is merged on load)
Time:     not measured on a real base in this repository yet: the seed-task examples are ~100-400 BPE
          tokens, so the base needs block_size >= 512 (e.g. imported GPT-2); the tests run it on a tiny base.
Expect:   validation loss on the replies only; no reference figure yet.
"""

from configs.base import base_config


def get_config():
    c = base_config()
    c.task.name = "sft"
    c.task.dataset = "alpaca_seed_tasks"
    c.task.template = "chatml"
    c.task.packing = True
    c.data.tokenizer = "byte"  # used only from scratch (a base brings its own tokenizer)
    c.peft.method = "lora"
    c.peft.lora.targets = "attn/(query|key|value|out_kernel)|mlp/(fc|proj)"
    c.model.dropout = 0.0
    c.train.batch_size = 8
    c.train.num_steps = 300
    c.train.eval_every = 50
    c.train.log_every = 10
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.0
    c.sample.num_tokens = 0
    return c
