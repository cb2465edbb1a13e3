"""SST-2, Linear probe: the base frozen whole, only the 258-parameter label head on mean-pooled features trains.

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_probe.py --init_from=runs/sst2_base --workdir=runs/sst2_probe
Time:     1.2 min here (1,500 steps; nothing else running).
Expect:   dev 62.2% / test 60.4% (54.2 / 54.1 with task.pooling=last): how much sentiment the frozen
          base's features carry, the ceiling the frozen-base PEFT methods start from. (README "Fine-tuning results")
"""

from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "frozen"
    c.task.pooling = "mean"
    c.optim.lr = 3e-3
    c.optim.weight_decay = 0.0
    c.train.num_steps = 1500
    c.task.patience = 8
    return c
