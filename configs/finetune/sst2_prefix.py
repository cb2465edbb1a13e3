"""SST-2, Prefix tuning: 8 trainable key/value slots per layer (direct parameters, 0.6% of the model).

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_prefix.py --init_from=runs/sst2_base --workdir=runs/sst2_prefix
Time:     3.6 min here (1,500 steps, two runs sharing the 2 cores).
Expect:   dev 64.1% / test 63.4%, 0.64% of parameters trained; with --config.peft.prefix.hidden=64
          (Li & Liang's MLP reparameterisation, 7.3% in training) dev 67.5% / test 67.3%. (README "Fine-tuning results")
"""

from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "prefix"
    c.task.pooling = "mean"  # frozen-base methods: picked over "last" on dev (README "Fine-tuning results")
    c.peft.prefix.length = 8
    c.peft.prefix.hidden = 0
    c.optim.lr = 5e-3
    c.optim.min_lr = 5e-4
    c.optim.weight_decay = 0.0
    c.task.patience = 0  # slow start: run the whole schedule
    c.train.num_steps = 1500
    return c
