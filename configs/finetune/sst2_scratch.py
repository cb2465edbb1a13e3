"""SST-2, From scratch on SST-2 alone (no base; BPE 4096 learned from SST-2 train; same 4x128 model as the base).

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2_scratch.py --workdir=runs/sst2_scratch
Time:     4.3 min here (1,000 steps, two runs sharing the 2 cores).
Expect:   dev 79.2% / test 76.9% accuracy (best dev checkpoint). (README "Fine-tuning results")
"""

from configs.finetune.sst2 import get_config as sst2_config


def get_config():
    c = sst2_config()
    c.peft.method = "full"
    c.model.n_layer = 4
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 64
    c.model.pos = "rope"  # as the base (configs/sst2_pretrain.py)
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    return c
