"""SST-2, Prefix tuning: 8 trainable key/value slots per layer (direct parameters, 0.6% of the model).

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_prefix.py --init_from=runs/sst2_base --workdir=runs/sst2_prefix
Time:     see README "Fine-tuning results" (measured there).
Expect:   see README "Fine-tuning results".
"""
from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "prefix"
    c.peft.prefix_len = 8
    c.peft.prefix_hidden = 0
    c.optim.lr = 1e-2
    c.optim.min_lr = 1e-3
    c.optim.weight_decay = 0.0
    c.task.patience = 0  # slow start: run the whole schedule
    return c
