"""Baseline: digits_vqa fed blank images (every image zero): must sit at chance, a check on answer leakage.

Run:      python -m gpt_jax.main --config=configs/multimodal/no_image.py --workdir=runs/vqa_no_image
Time:     313.6 s wall (239.4 s CPU) on the 2-core AMD EPYC host, sharing it with the vit_classifier run.
Expect:   every kind at or below its chance level (printed at the end and in vqa_report.json): digit 11.45,
          caption 11.45, parity 49.70, arithmetic 10.20, compare 45.70 (chance 11.95/12.25/50.30/16.60/45.70).
"""

from configs.multimodal.digits_vqa import get_config as digits_config


def get_config():
    c = digits_config()
    c.vqa.blank_images = True
    c.vqa.aux_weight = 0.0  # no digit head on blank images
    c.train.num_steps = 300  # nothing to learn beyond the answer priors
    return c
