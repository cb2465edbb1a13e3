"""nanoGPT's GPU recipe on tiny Shakespeare (char level): 6 layers, 6 heads, 384 embd, block 256, batch 64.

Run:      python -m gpt_jax.main --config=configs/shakespeare_char.py --workdir=runs/shk
Time:     15-19 s/step on the project's 2-core CPU (5000 steps ~ 1 day; measured with
          `python -m benchmarks.train_throughput --config=configs/shakespeare_char.py --steps=3`);
          minutes on one GPU.
Expect:   val loss ~1.47 at step 5000 (nanoGPT's README figure for this recipe; not reproduced here).
"""

from configs.base import base_config


def get_config():
    c = base_config()
    c.model.preset = "shakespeare-char"
    c.model.dropout = 0.2
    c.train.batch_size = 64
    c.train.num_steps = 5000
    c.train.steps_per_call = 1  # each step is seconds long on CPU: dispatch cost is noise
    c.train.log_every = 10
    c.train.eval_every = 250
    c.train.eval_batches = 200
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    c.optim.warmup_steps = 100
    c.optim.b2 = 0.99
    c.optim.weight_decay = 0.1
    c.checkpoint.every = 250
    return c
