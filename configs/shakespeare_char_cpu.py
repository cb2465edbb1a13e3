"""nanoGPT's CPU recipe on tiny Shakespeare (char level): 4 layers, 4 heads, 128 embd, block 64.

Run:      python -m gpt_jax.main --config=configs/shakespeare_char_cpu.py --workdir=runs/shk_cpu
Time:     TIME_PLACEHOLDER
Expect:   VAL_PLACEHOLDER
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
    c.model.bias = False           # nanoGPT's train.py default (no biases in Linear/LayerNorm)
    c.optim.decay_embeddings = True  # nanoGPT decays every >=2-D tensor, embeddings included
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    c.optim.warmup_steps = 100
    c.optim.b2 = 0.99
    c.optim.weight_decay = 0.1
    c.optim.clip = 1.0
    return c
