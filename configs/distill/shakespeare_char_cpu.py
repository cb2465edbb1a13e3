"""Distil a trained character-level Shakespeare model into a 2-layer student (the CPU recipe's width).

Run:      python -m gpt_jax.main --config=configs/distill/shakespeare_char_cpu.py --workdir=runs/distill_2l \
              --config.distill.teacher=runs/shk_cpu
          (teacher: python -m gpt_jax.main --config=configs/shakespeare_char_cpu.py --workdir=runs/shk_cpu)
Baseline: the same student from scratch on the same tokens: python -m gpt_jax.main
          --config=configs/shakespeare_char_cpu.py --workdir=runs/scratch_2l --config.model.n_layer=2
Time:     600 steps (--config.train.num_steps=600): 44-280 s on the project's 2-core CPU depending on
          other jobs (the step also runs the teacher's forward); 2000 steps not measured.
Expect:   at 600 steps, teacher = the CPU recipe (val 1.898): val loss 2.164 +- 0.012 (3 seeds, 200
          batches) vs 2.272 +- 0.013 from scratch (experiments/results/compression.md); with a 6-layer
          128-wide teacher (val 1.898): 2.164 +- 0.018 (3 seeds).
"""

import ml_collections

from configs.shakespeare_char_cpu import get_config as cpu_recipe


def get_config():
    c = cpu_recipe()
    c.model.n_layer = 2
    c.task.name = "distill"
    c.distill = ml_collections.ConfigDict()
    c.distill.teacher = ""  # a gpt_jax workdir trained on the same tokenizer (required)
    c.distill.temperature = 2.0  # softens both distributions; the KL term is scaled by T^2
    c.distill.kl_weight = 0.5
    c.distill.hard_weight = 0.5  # weight of the usual next-token cross entropy
    return c
