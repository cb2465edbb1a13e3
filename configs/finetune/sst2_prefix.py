"""SST-2, Prefix tuning: 8 trainable key/value slots per layer (direct parameters, 0.6% of the model).

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_prefix.py --init_from=runs/sst2_base --workdir=runs/sst2_prefix
Time:     4.1 min here (1,500 steps, two runs sharing the 2 cores).
Expect:   dev 56.1% / test 54.5%, 0.64% of parameters trained. (README "Fine-tuning results")
"""
from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "prefix"
    c.peft.prefix_len = 8
    c.peft.prefix_hidden = 0
    c.optim.lr = 5e-3
    c.optim.min_lr = 5e-4
    c.optim.weight_decay = 0.0
    c.task.patience = 0  # slow start: run the whole schedule
    c.train.num_steps = 1500
    return c
