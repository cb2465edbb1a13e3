"""Quantization-aware fine-tune (int4, group 64) of the CPU-recipe char model, then quantize it.

Run:      python -m gpt_jax.main --config=configs/qat/shakespeare_char_cpu.py --workdir=runs/qat4 \
              --config.quant.source=runs/shk_cpu
          python -m gpt_jax.compress quantize --workdir=runs/qat4 --out=runs/qat4_int4 --bits=4 --group_size=64
          python -m gpt_jax.evaluate --workdir=runs/qat4_int4 --eval_batches=200
Control:  the same fine-tune without fake quant (--config.quant.qat_bits=0), quantized the same way.
Time:     200 steps; see experiments/results/compression.md for the measured wall time (shared 2-core CPU).
Expect:   see experiments/results/compression.md (QAT vs PTQ rows).
"""

import ml_collections

from configs.shakespeare_char_cpu import get_config as cpu_recipe


def get_config():
    c = cpu_recipe()
    c.task.name = "qat"
    c.quant = ml_collections.ConfigDict()
    c.quant.qat_bits = 4  # 8 | 4; 0: no fake quant (the control fine-tune)
    c.quant.group_size = 64  # inputs per scale; 0: per output channel
    c.quant.source = ""  # a trained float run to fine-tune from ("": train from scratch with fake quant)
    c.train.num_steps = 200
    c.train.eval_every = 200
    c.optim.lr = 3e-4  # as the prune fine-tune: cosine to a tenth
    c.optim.min_lr = 3e-5
    c.optim.warmup_steps = 20
    c.checkpoint.every = 200
    c.sample.num_tokens = 0
    return c
