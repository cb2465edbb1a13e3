"""The CPU recipe widened to nanoGPT's Shakespeare model size: 6 layers, 6 heads, 384 embd, block 64.

The compression issue's "6-layer 384-wide char model trained as long as fits": the CPU recipe's batch
(12 x 64 tokens) and schedule, 3,000 steps, dropout 0.1 (10.7 M params see ~2.3 epochs of the text).
Run:      python -m gpt_jax.main --config=configs/shakespeare_char_6x384_cpu.py --workdir=runs/shk_6x384
Time:     20 min 22 s on the project's 2-core CPU (AMD EPYC, shared with single-threaded benchmark jobs; peak
          RSS 1.6 GB); ~0.25 s/step idle (`python -m benchmarks.train_throughput
          --config=configs/shakespeare_char_6x384_cpu.py --steps=20`, before model.norm_grad="custom": ~20% less now).
Expect:   val loss 1.696 at step 3000 (20-batch eval), 1.6994 on 200 batches (`python -m gpt_jax.evaluate
          --workdir=W --eval_batches=200`); its compressed variants: experiments/results/compression.md
          ("The 6-layer 384-wide char model, trained").
"""

from configs.shakespeare_char_cpu import get_config as cpu_recipe


def get_config():
    c = cpu_recipe()
    c.model.n_layer = 6
    c.model.n_head = 6
    c.model.n_embd = 384
    c.model.dropout = 0.1
    c.train.num_steps = 3000
    c.train.eval_every = 500
    c.checkpoint.every = 500
    return c
