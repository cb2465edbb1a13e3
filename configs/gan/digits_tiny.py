"""A tiny class-conditional DCGAN on sklearn digits (8x8): a smoke test, not a result.

Run:      python -m gpt_jax.main --config=configs/gan/digits_tiny.py --workdir=runs/gan_digits
Time:     ~20 s of CPU (mostly compilation; 107 s wall on the shared 2-core host).
Expect:   it runs, checkpoints and writes samples.png; the digits are barely formed after 100 steps.
"""

from configs.base import base_config
from gpt_jax.tasks.gan import default_gan_section


def get_config():
    c = base_config()
    c.task.name = "gan"
    c.model.family = "dcgan"
    c.model.image_size = 8
    c.model.channels = 1
    c.model.z_dim = 16
    c.model.n_up = 2
    c.model.g_width = 16
    c.model.d_width = 8
    c.model.num_classes = 10
    c.model.g_norm = "layer"
    c.model.d_norm = "none"
    c.model.output = "tanh"
    c.gan = default_gan_section()
    c.gan.dataset = "sklearn_digits"
    c.gan.grid_every = 50
    c.train.batch_size = 32
    c.train.num_steps = 100
    c.train.steps_per_call = 1  # convolutions: no scan (gpt_jax.train.scan_steps)
    c.train.log_every = 10
    c.train.eval_every = 50
    c.checkpoint.every = 50
    c.sample.num_tokens = 0
    return c
