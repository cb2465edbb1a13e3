"""SST-2, Full fine-tuning: every parameter trains.

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_full.py --init_from=runs/sst2_base --workdir=runs/sst2_full
Time:     5.7-6.1 min here (1,000 steps, two runs sharing the 2 cores).
Expect:   dev 79.5% / test 80.6% accuracy (best dev checkpoint); seeds 0-2: dev 79.5 +- 0.2, test 80.0 +- 0.5. (README "Fine-tuning results")
"""

from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "full"
    return c
