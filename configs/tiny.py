"""A tiny model for tests and smoke runs: 2 layers, 2 heads, 32 embd, block 32.

Run:      python -m gpt_jax.main --config=configs/tiny.py --workdir=runs/tiny
Time:     ~10 s here (mostly compilation).
Expect:   val loss falls from ~4.2 to ~2.9 in 60 steps (a sanity check, not a result).
"""

from configs.base import base_config


def get_config():
    c = base_config()
    c.model.n_layer = 2
    c.model.n_head = 2
    c.model.n_embd = 32
    c.model.block_size = 32
    c.train.batch_size = 8
    c.train.num_steps = 60
    c.train.steps_per_call = 10
    c.train.log_every = 10
    c.train.eval_every = 30
    c.train.eval_batches = 4
    c.optim.warmup_steps = 10
    c.optim.lr = 3e-3
    c.checkpoint.every = 30
    c.sample.num_tokens = 32
    return c
