"""Baseline: digits_vqa fed blank images (every image zero): must sit at chance, a check on answer leakage.

Run:      python -m gpt_jax.main --config=configs/multimodal/no_image.py --workdir=runs/vqa_no_image
Time:     measured only as 150 steps x batch 32: 417 s wall on the 2-core host shared with other jobs.
Expect:   every kind at or below its chance level (printed at the end and in vqa_report.json); at 150 x 32:
          digit 9.1, caption 9.1, parity 50.3, arithmetic 11.0, compare 44.5 (chance 12.0/12.3/50.3/16.6/45.7).
"""

from configs.multimodal.digits_vqa import get_config as digits_config


def get_config():
    c = digits_config()
    c.vqa.blank_images = True
    c.vqa.aux_weight = 0.0  # no digit head on blank images
    c.train.num_steps = 300  # nothing to learn beyond the answer priors
    return c
