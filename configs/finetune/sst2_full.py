"""SST-2, Full fine-tuning: every parameter trains.

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_full.py --init_from=runs/sst2_base --workdir=runs/sst2_full
Time:     5.6 min here (1,000 steps, other jobs running).
Expect:   dev 79.7% / test 79.1% accuracy (best dev checkpoint). (README "Fine-tuning results")
"""
from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "full"
    return c
