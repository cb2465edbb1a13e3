"""nanoGPT's CPU recipe on tiny Shakespeare (char level): 4 layers, 4 heads, 128 embd, block 64.

Run:      python -m gpt_jax.main --config=configs/shakespeare_char_cpu.py --workdir=runs/shk_cpu
Time:     ~2 min on the project's 2-core CPU (Zen 3, AVX2), compile included; ~52 ms/step.
Expect:   val loss ~1.90-1.91 at step 2000 (200-batch eval: 1.907). nanoGPT's own model from the same
          recipe scores 1.9005 on the same eval windows (its log's 1.8857 is a 20-batch random eval).
"""
from configs.base import base_config


def get_config():
    c = base_config()
    c.model.preset = "shakespeare-char-cpu"
    c.model.dropout = 0.0
    c.train.batch_size = 12
    c.train.num_steps = 2000
    c.train.eval_every = 250
    c.train.eval_batches = 20
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    c.optim.warmup_steps = 100
    c.optim.b2 = 0.99
    c.optim.weight_decay = 0.1
    c.optim.clip = 1.0
    return c
