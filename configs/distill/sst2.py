"""Distil the SST-2 classifier trained from scratch (configs/finetune/sst2_scratch.py, 4x128) into a 2-layer
student on the same BPE tokenizer (gpt_jax.tasks.distill_classify).

Run:      python -m gpt_jax.finetune --config=configs/distill/sst2.py --workdir=runs/sst2_distill_2l \
              --config.distill.teacher=runs/sst2_scratch
          (teacher: python -m gpt_jax.finetune --config=configs/finetune/sst2_scratch.py --workdir=runs/sst2_scratch)
Baseline: the same student from scratch on the same rows (same seed -> same batches):
          python -m gpt_jax.finetune --config=configs/finetune/sst2_scratch.py --workdir=runs/sst2_scratch_2l \
              --config.model.n_layer=2 --config.task.patience=0
Time:     1,000 steps (the teacher's recipe, all run: task.patience=0 in both arms): 115-268 s on the shared
          2-core CPU (load 1.7-7; the step also runs the 4-layer teacher's forward); the baseline 82-212 s.
Expect:   teacher (step 1000) dev 76.95% / test 76.33%. Students, best-dev checkpoint, 10 seeds: dev 78.91 +- 0.48%
          / test 78.30 +- 0.71% distilled vs 78.29 +- 0.71% / 78.01 +- 0.63% from scratch (paired by seed:
          dev +0.62 +- 0.89, test +0.29 +- 0.71); soft labels only (kl_weight=1, hard_weight=0): dev 76.49%,
          about the teacher's (3 seeds).
"""

import ml_collections

from configs.finetune.sst2_scratch import get_config as sst2_scratch


def get_config():
    c = sst2_scratch()
    c.model.n_layer = 2
    c.task.name = "distill_classify"
    c.task.patience = 0  # run every step (both arms): the report is the best dev checkpoint's
    c.distill = ml_collections.ConfigDict()
    c.distill.teacher = ""  # a classify workdir trained with the same tokenizer and labels (required)
    c.distill.temperature = 2.0  # softens both distributions; the KL term is scaled by T^2
    c.distill.kl_weight = 0.5
    c.distill.hard_weight = 0.5  # weight of the usual cross entropy on the gold label
    return c
