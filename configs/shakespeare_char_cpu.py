"""nanoGPT's CPU recipe on tiny Shakespeare (char level): 4 layers, 4 heads, 128 embd, block 64.

Run:      python -m gpt_jax.main --config=configs/shakespeare_char_cpu.py --workdir=runs/shk_cpu
Time:     2-3 min on the project's 2-core CPU (Zen 3, AVX2), compile included (120-170 s idle,
          up to ~190 s with other jobs running); 70-80 ms/step (`python -m benchmarks.train_throughput --config=configs/shakespeare_char_cpu.py`).
          51 s idle on an AMD EPYC with AVX-512 (2026-12-02, model.norm_grad="custom"; peak RSS 546 MB).
Expect:   val loss ~1.90 at step 2000 (seeds 0/1/2: 1.907, 1.912, 1.878 on the 20-batch eval; 1.898, 1.898,
          1.904 on 200 fixed batches, where nanoGPT's own models from this recipe score 1.901-1.909).
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
