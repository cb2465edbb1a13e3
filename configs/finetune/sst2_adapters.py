"""SST-2, Houlsby bottleneck adapters (width 16) after attention and MLP in every block.

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_adapters.py --init_from=runs/sst2_base --workdir=runs/sst2_adapters
Time:     9.0 min here (1,500 steps, two runs sharing the 2 cores).
Expect:   dev 70.9% / test 67.0%, 2.53% of parameters trained. (README "Fine-tuning results")
"""
from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "adapters"
    c.peft.adapter_dim = 16
    c.optim.lr = 3e-3
    c.optim.min_lr = 3e-4
    c.optim.weight_decay = 0.0
    c.train.num_steps = 1500
    c.task.patience = 8
    return c
