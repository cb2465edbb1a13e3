"""Smoke test of the multimodal stack on sklearn's 8x8 digits (1,437 train / 360 held out): seconds, not accuracy.

Run:      python -m gpt_jax.main --config=configs/multimodal/sklearn_digits_smoke.py --workdir=runs/vqa_smoke
Time:     55 s wall on the 2-core host while shared with other jobs (mostly compilation).
Expect:   the run completes and writes vqa_report.json; 20 steps train nothing: every kind near chance.
"""

from configs.multimodal.digits_vqa import get_config as digits_config
from configs.multimodal.digits_vqa import vit_section


def get_config():
    c = digits_config()
    c.vqa.dataset = "sklearn_digits"
    c.vqa.augment_shift, c.vqa.augment_rotate = 0.5, 5.0
    c.model.vit = vit_section(image_size=8, patch_size=2, n_layer=1, n_embd=32, stem_channels=8)
    c.model.n_layer, c.model.n_head, c.model.n_embd = 1, 2, 32
    c.train.batch_size, c.train.num_steps, c.train.log_every = 32, 20, 10
    c.optim.warmup_steps = 5
    return c
