"""SST-2, AdaLoRA on every matmul kernel: rank 4 per matrix pruned to an average of 2 by importance (budget schedule).

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_adalora.py --init_from=runs/sst2_base --workdir=runs/sst2_adalora
Time:     5.1-7.2 min here (1,500 steps, two runs sharing the 2 cores).
Expect:   dev 70.6% / test 68.5%; seeds 0-2: dev 70.3 +- 0.6, test 68.0 +- 0.6; final ranks 0-4 per
          matrix, 48 in all, most in the lower layers. (README "Fine-tuning results")
"""

from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "adalora"
    c.task.pooling = "mean"  # frozen-base methods: picked over "last" on dev (README "Fine-tuning results")
    c.peft.adalora.rank = 4
    c.peft.adalora.target_rank = 2
    c.peft.adalora.alpha = 4.0
    c.peft.adalora.targets = "attn/(query|key|value|out_kernel)|mlp/(fc|proj)"
    c.peft.adalora.init_warmup = 0.1
    c.peft.adalora.final_warmup = 0.3
    c.peft.adalora.mask_interval = 10
    c.optim.lr = 3e-3
    c.optim.min_lr = 3e-4
    c.optim.weight_decay = 0.0
    c.task.patience = 0  # the budget schedule needs the whole run
    c.train.num_steps = 1500
    return c
