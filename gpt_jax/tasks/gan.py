"""An image GAN (issue 19): a DCGAN generator and discriminator trained alternately, each with its own
Optax optimizer and schedule (`updates`: n_critic discriminator steps, one generator step, then the
generator's EMA), on digit images (gpt_jax.data.images).

The EMA is a third sub-model, `generator_ema`, moved by plain SGD with lr 1 - decay on the loss
0.5 * ||ema - generator||^2: its step is exactly ema <- decay * ema + (1 - decay) * generator, so it is
trained, checkpointed and resumed like the others. Samples, grids and evaluation use it.
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gpt_jax.analysis import gan_samples
from gpt_jax.base_config import gan_adam
from gpt_jax.data.images import load_image_splits
from gpt_jax.models import registry as models
from gpt_jax.models.dcgan import DCGANConfig, Discriminator, Generator
from gpt_jax.objectives import gan_losses
from gpt_jax.optim import make_optimizer
from gpt_jax.paths import as_path
from gpt_jax.tasks.backbone import epoch_batches, padded_rows
from gpt_jax.train import Update

GRID_SEED = 1234  # the same noise in every grid of a run, so grids over training compare


def default_gan_section() -> ml_collections.ConfigDict:
    """config.gan: what a GAN config file sets (configs/gan/*.py)."""
    return ml_collections.ConfigDict(
        {
            "dataset": "mnist_split",  # mnist_split | sklearn_digits | tfds:mnist
            "loss": "non_saturating",  # non_saturating | hinge | wasserstein (with gp_weight, WGAN-GP)
            "gp_weight": 0.0,  # gradient penalty on real/fake interpolates (10 for WGAN-GP)
            "n_critic": 1,  # discriminator updates per generator update
            "ema_decay": 0.999,  # generator EMA (ramped up as min(decay, (1 + t) / (10 + t)))
            "grid_every": 0,  # a sample grid PNG at each eval step that is a multiple of this (0: at the end only)
            "d_optim": gan_adam(lr=2e-4, clip=0.0),
            "g_optim": gan_adam(lr=2e-4, clip=0.0),
        }
    )


def ema_lr(decay: float) -> optax.Schedule:
    return lambda t: 1.0 - jnp.minimum(decay, (1.0 + t) / (10.0 + t))


class GANTask:
    name = "gan"
    tokenizer = None  # images: the trainer saves no tokenizer
    seq_len, lm_head = 1, False  # one image is one "token": tokens/s = images/s

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> GANTask:
        return cls(config, workdir)

    def __init__(self, config: ml_collections.ConfigDict, workdir):
        if "gan" not in config:
            raise ValueError("task.name='gan' needs a config.gan section; start from configs/gan/mnist_dcgan.py")
        self.config, self.gan, self.workdir = config, config.gan, as_path(workdir)
        if self.gan.loss not in gan_losses.LOSSES:
            raise ValueError(f"config.gan.loss={self.gan.loss!r} is not one of {gan_losses.LOSSES}")
        if self.gan.n_critic < 1 or not 0.0 <= self.gan.ema_decay < 1.0 or self.gan.gp_weight < 0:
            raise ValueError(
                f"config.gan: n_critic={self.gan.n_critic} must be >= 1, ema_decay={self.gan.ema_decay} in [0, 1), "
                f"gp_weight={self.gan.gp_weight} >= 0"
            )
        self.family = models.family_of(config.model)
        if self.family.name != "dcgan":
            raise ValueError(f"task.name='gan' needs model.family='dcgan', not {self.family.name!r}")
        d = config.data
        splits = load_image_splits(self.gan.dataset, manual_dir=d.manual_dir, data_dir=d.tfds_dir)
        self.model_cfg: DCGANConfig = models.build_model_config(config, 0)
        side = splits["train"]["images"].shape[1]
        if side != self.model_cfg.image_size:
            raise ValueError(
                f"gan.dataset={self.gan.dataset!r} has {side}x{side} images but model.image_size="
                f"{self.model_cfg.image_size}; set --config.model.image_size={side}"
            )
        self.data = {
            split: {
                "images": gan_samples.from_unit(s["images"][..., None], self.model_cfg).astype(np.float32),
                "labels": s["labels"].astype(np.int32),
            }
            for split, s in splits.items()
        }

    # -- model
    def init(self, rng):
        params = nn.meta.unbox(self.family.init(self.model_cfg, rng))
        return {**params, "generator_ema": jax.tree.map(jnp.copy, params["generator"])}, {}

    def pretrained(self):
        return ()

    def _g(self, g_params, z_BxZ, labels_B):
        return Generator(self.model_cfg).apply({"params": g_params}, z_BxZ, self._labels(labels_B))

    def _d(self, d_params, images, labels_B):
        return Discriminator(self.model_cfg).apply({"params": d_params}, images, self._labels(labels_B))

    def _labels(self, labels_B):
        return labels_B if self.model_cfg.num_classes else None

    def _noise(self, rng, n: int):
        return jax.random.normal(rng, (n, self.model_cfg.z_dim), jnp.float32)

    def d_loss(self, params, frozen, batch, rng):
        del frozen
        real, labels = batch["images"], batch["labels"]
        z_rng, eps_rng = jax.random.split(rng)
        fake = self._g(params["generator"], self._noise(z_rng, real.shape[0]), labels)
        d = lambda x: self._d(params["discriminator"], x, labels)
        loss_B = gan_losses.d_loss(self.gan.loss, d(real), d(fake))
        if self.gan.gp_weight:
            eps_B = jax.random.uniform(eps_rng, (real.shape[0],))
            loss_B = loss_B + self.gan.gp_weight * gan_losses.gradient_penalty(d, real, fake, eps_B)
        return loss_B.sum(), jnp.asarray(real.shape[0], jnp.float32)

    def g_loss(self, params, frozen, batch, rng):
        del frozen
        labels = batch["labels"]  # class-conditional: the batch's (shuffled, so balanced) classes
        fake = self._g(params["generator"], self._noise(rng, labels.shape[0]), labels)
        loss_B = gan_losses.g_loss(self.gan.loss, self._d(params["discriminator"], fake, labels))
        return loss_B.sum(), jnp.asarray(labels.shape[0], jnp.float32)

    @staticmethod
    def ema_loss(params, frozen, batch, rng):
        del frozen, batch, rng
        diff = jax.tree.map(lambda e, g: e - jax.lax.stop_gradient(g), params["generator_ema"], params["generator"])
        return 0.5 * sum(jnp.sum(x**2) for x in jax.tree.leaves(diff)), jnp.asarray(1.0)

    def updates(self, tx, schedule):
        del tx, schedule  # config.optim is unused: each player has its own section
        steps = self.config.train.num_steps
        d_tx, d_sched = make_optimizer(self.gan.d_optim, steps, self.family.matrix_dims)
        g_tx, g_sched = make_optimizer(self.gan.g_optim, steps, self.family.matrix_dims)
        ema = ema_lr(self.gan.ema_decay)
        return [Update(self.d_loss, d_tx, d_sched, "discriminator")] * self.gan.n_critic + [
            Update(self.g_loss, g_tx, g_sched, "generator"),
            Update(self.ema_loss, optax.sgd(ema), ema, "generator_ema"),
        ]

    def loss(self):
        raise NotImplementedError("the GAN task trains through updates(); it has no single loss")

    def wrap_optimizer(self, tx):
        return tx

    def metrics(self):
        """val_loss: D's loss on held-out images against the EMA generator's (fixed noise); val_d_accuracy:
        its share of real logits > 0 and fake logits < 0; val_g_loss: the EMA generator's loss."""

        def metrics(params, frozen, batch):
            del frozen
            valid_B = batch["valid"]
            fake = self._g(params["generator_ema"], batch["z"], batch["labels"])
            real_B = self._d(params["discriminator"], batch["images"], batch["labels"])
            fake_B = self._d(params["discriminator"], fake, batch["labels"])
            n = valid_B.sum()
            right = jnp.where(valid_B, (real_B > 0).astype(jnp.float32) + (fake_B < 0), 0.0).sum()
            return {
                "val_loss": (jnp.where(valid_B, gan_losses.d_loss(self.gan.loss, real_B, fake_B), 0.0).sum(), n),
                "val_g_loss": (jnp.where(valid_B, gan_losses.g_loss(self.gan.loss, fake_B), 0.0).sum(), n),
                "val_d_accuracy": (right, 2 * n),
            }

        return metrics

    # -- data
    def train_batches(self, step, k, process_index, process_count):
        return epoch_batches(
            self.data["train"], self.config.train.batch_size, self.config.seed, step, k, "gan", process_index,
            process_count,
        )  # fmt: skip

    def eval_batches(self, process_index, process_count):
        v = self.data["validation"]
        n = len(v["labels"])
        z = np.asarray(self._noise(jax.random.key(self.config.seed + 1), n))
        rows = {"images": v["images"], "labels": v["labels"], "z": z, "valid": np.ones(n, bool)}
        return padded_rows(rows, self.config.train.batch_size, process_index, process_count, {"valid": False})

    # -- grids and end of run
    def ema_params(self, state):
        return jax.device_get(state.params["generator_ema"])

    def on_eval(self, trainer, state, step: int) -> None:
        """A sample grid at `gan.grid_every` steps (checked at evals): grids/step_<N>.png."""
        every = self.gan.grid_every
        if every and step % every == 0 and jax.process_index() == 0:
            path = self.workdir / "grids" / f"step_{step:06d}.png"
            gan_samples.write_sample_grid(path, self.model_cfg, self.ema_params(state), GRID_SEED)

    def finish(self, trainer, state, workdir, best_state=None):
        del trainer, best_state
        out = {}
        if jax.process_index() == 0:
            path = gan_samples.write_sample_grid(
                as_path(workdir) / "samples.png", self.model_cfg, self.ema_params(state), GRID_SEED, scale=2
            )
            out["sample_grid"] = str(path)
        return out
