"""SST-2, LoRA r=2 on every matmul kernel (attention q/k/v/out, MLP fc/proj; alpha 4): 1.4% of the parameters train.

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_lora.py --init_from=runs/sst2_base --workdir=runs/sst2_lora
Time:     see README "Fine-tuning results" (measured there).
Expect:   see README "Fine-tuning results".
"""
from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "lora"
    c.peft.rank = 2
    c.peft.alpha = 4.0
    c.peft.targets = "attn/(query|key|value|out_kernel)|mlp/(fc|proj)"
    c.optim.lr = 1e-2
    c.optim.min_lr = 1e-3
    c.optim.weight_decay = 0.0
    return c
