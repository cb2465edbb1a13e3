"""Baseline: the digits_vqa encoder alone with a 10-way head, on the same split (mnist_split) and augmentation.

Run:      python -m gpt_jax.main --config=configs/multimodal/vit_classifier.py --workdir=runs/vit_classifier
Time:     352.5 s wall (286.7 s CPU) on the 2-core AMD EPYC host, sharing it with the no_image run.
Expect:   held_out_accuracy 0.965 on the 2,000 held-out images (report.json); digits_vqa's digit answers: 98.00.
"""

from configs.multimodal.digits_vqa import get_config as digits_config
from configs.multimodal.digits_vqa import vit_section


def get_config():
    c = digits_config()
    c.task.name = "image_classify"
    c.model.family = "vit"
    c.model.vit = vit_section(num_classes=10)
    return c
