"""Distil the 6-layer 384-wide char model into a 2-layer student of the same width.

Teacher:  python -m gpt_jax.main --config=configs/shakespeare_char_6x384_cpu.py --workdir=runs/shk_6x384
Run:      python -m gpt_jax.main --config=configs/distill/shakespeare_char_6x384_cpu.py --workdir=runs/distill_2x384 \
              --config.distill.teacher=runs/shk_6x384 --config.seed=S
Baseline: the same student from scratch on the same tokens (same seed => same batches and initial weights):
          python -m gpt_jax.main --config=configs/distill/shakespeare_char_6x384_cpu.py --workdir=runs/scratch_2x384 \
              --config.task.name=lm --config.seed=S
Time:     264-381 s distilled (the step also runs the teacher's forward), 136-178 s from scratch, on the project's
          2-core CPU shared with other jobs (load 4-6).
Expect:   val loss on 200 batches (`python -m gpt_jax.evaluate --workdir=W --eval_batches=200`), seeds 0/1/2:
          distilled 1.722 +- 0.005, scratch 1.834 +- 0.010 (teacher 1.699); experiments/results/compression.md.
"""

from configs.distill.shakespeare_char_cpu import get_config as distill_cpu


def get_config():
    c = distill_cpu()  # the CPU recipe's batch and schedule, T = 2, kl 0.5 / hard 0.5
    c.model.n_layer = 2
    c.model.n_head = 6
    c.model.n_embd = 384
    c.train.num_steps = 1000
    c.train.eval_every = 500
    c.checkpoint.every = 500
    c.sample.num_tokens = 0
    return c
