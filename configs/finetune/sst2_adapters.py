"""SST-2, Houlsby bottleneck adapters (width 16) after attention and MLP in every block.

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_adapters.py --init_from=runs/sst2_base --workdir=runs/sst2_adapters
Time:     3.9-4.7 min here (1,500 steps, two runs sharing the 2 cores).
Expect:   dev 72.7% / test 68.7%, 2.53% of parameters trained; seeds 0-2: dev 71.4 +- 1.1,
          test 69.7 +- 1.3. (README "Fine-tuning results")
"""

from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "adapters"
    c.task.pooling = "mean"  # frozen-base methods: picked over "last" on dev (README "Fine-tuning results")
    c.peft.adapters.dim = 16
    c.optim.lr = 3e-3
    c.optim.min_lr = 3e-4
    c.optim.weight_decay = 0.0
    c.train.num_steps = 1500
    c.task.patience = 8
    return c
