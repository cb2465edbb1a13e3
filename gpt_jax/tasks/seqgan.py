"""A text GAN (issue 19): our GPT as generator (from an MLE-pretrained workdir via `init_from`), the classify
task's model (a GPT backbone, pooled, a linear head; one logit) as discriminator, trained alternately with
their own Optax optimizers (`updates`): D on real windows against samples, then G by

- `reinforce` (SeqGAN, Yu et al. 2017): the reward is D's probability that the sample is real, minus a
  baseline (`mean`: the other rows' mean; `ema`: a moving average, a third sub-model `baseline` moved like
  the image GAN's EMA); with `rollouts` = M > 0, per-token rewards from M Monte-Carlo completions at every
  `rollout_every`-th generated token (gpt_jax.objectives.policy_gradient);
- `gumbel`: straight-through Gumbel-softmax samples (gpt_jax.generation.scan_sample), which D reads as
  one-hot rows through its embedding matrix, so G gets D's gradient directly (non-saturating loss).

Either adds `mle_weight` x the causal NLL of G on the real batch. Every row is a real window of `seq_len`
tokens; its first `prompt_len` tokens are the prompt the generator continues (the same for D's real and
fake rows). Sampling runs inside the jitted step with a KV-cache sweep.

As in SeqGAN, D can first train alone for `d_pretrain_steps` against the MLE generator's samples (G's loss
is not computed and its optimizer stays untouched until then) and take `d_steps` updates per G update. A
2-layer D from scratch learns the real/fake difference (spelling) far slower than G's MLE term moves the
samples (experiments/results/adversarial.md); `discriminator.init='generator'` starts D from the MLE
generator's weights instead (a character LM's features, G's architecture).
"""

from __future__ import annotations

import dataclasses
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gpt_jax import data as data_lib
from gpt_jax.base_config import gan_adam
from gpt_jax.config import ModelConfig, model_config_from
from gpt_jax.data.sources import load_text_splits
from gpt_jax.data.tokenizers import build_tokenizer
from gpt_jax.generation.scan_sample import fill, gumbel_fill
from gpt_jax.model import GPT, init_params
from gpt_jax.models import registry as models
from gpt_jax.objectives import gan_losses
from gpt_jax.objectives import policy_gradient as pg
from gpt_jax.optim import make_optimizer
from gpt_jax.paths import as_path
from gpt_jax.peft.base import graft
from gpt_jax.tasks.backbone import Backbone
from gpt_jax.tasks.classify import POOLINGS, pool
from gpt_jax.tasks.gan import ema_lr
from gpt_jax.train import Update

ESTIMATORS = ("reinforce", "gumbel")
D_INITS = ("random", "generator")
EVAL_SAMPLE_SEED = 4321  # the eval's samples use fixed noise: D accuracy over training compares


def default_seqgan_section() -> ml_collections.ConfigDict:
    """config.seqgan: what a text-GAN config file sets (configs/gan/shakespeare_seqgan.py)."""
    return ml_collections.ConfigDict(
        {
            "estimator": "reinforce",  # reinforce | gumbel
            "baseline": "mean",  # none | mean (leave-one-out batch mean) | ema (moving average)
            "baseline_decay": 0.9,
            "rollouts": 0,  # Monte-Carlo completions per reward checkpoint (0: the sequence reward for every token)
            "rollout_every": 8,  # a reward checkpoint every this many generated tokens
            "mle_weight": 0.0,  # + this x G's causal NLL on the real batch
            "adversarial_weight": 1.0,  # x G's adversarial term (0: the MLE-only control, same steps and optimizer)
            "gumbel_tau": 1.0,  # softmax temperature of the straight-through relaxation
            "temperature": 1.0,  # G samples (and is scored) at this temperature while training
            "seq_len": 64,  # tokens per row (<= the generator's block_size)
            "prompt_len": 8,  # real tokens every row starts with; G writes the remaining ones
            "d_steps": 1,  # discriminator updates per generator update
            "d_pretrain_steps": 0,  # the first steps train D alone on the (MLE) generator's samples
            # init='generator': D's backbone starts as a copy of the generator (its shape; the sizes here
            # are then unused); 'random': a fresh GPT of these sizes
            "discriminator": ml_collections.ConfigDict(
                dict(n_layer=2, n_head=4, n_embd=64, dropout=0.0, pooling="mean", init="random")
            ),
            "d_optim": gan_adam(lr=1e-4, clip=1.0),
            "g_optim": gan_adam(lr=1e-4, clip=1.0),
            "num_samples": 8,  # rows decoded into samples.txt at the end
        }
    )


def _check(s, block_size: int) -> None:
    if s.estimator not in ESTIMATORS:
        raise ValueError(f"config.seqgan.estimator={s.estimator!r} is not one of {ESTIMATORS}")
    if s.baseline not in pg.BASELINES:
        raise ValueError(f"config.seqgan.baseline={s.baseline!r} is not one of {pg.BASELINES}")
    if s.discriminator.get("init", "random") not in D_INITS:
        raise ValueError(f"config.seqgan.discriminator.init={s.discriminator.init!r} is not one of {D_INITS}")
    if s.get("d_pretrain_steps", 0) < 0:
        raise ValueError(f"config.seqgan.d_pretrain_steps={s.d_pretrain_steps} must be >= 0 (0: no D pretraining)")
    if s.discriminator.pooling not in POOLINGS:
        raise ValueError(f"config.seqgan.discriminator.pooling={s.discriminator.pooling!r} is not one of {POOLINGS}")
    if not 1 <= s.prompt_len < s.seq_len <= block_size:
        raise ValueError(
            f"config.seqgan: need 1 <= prompt_len ({s.prompt_len}) < seq_len ({s.seq_len}) <= the generator's "
            f"block_size ({block_size})"
        )
    if s.rollouts < 0 or s.rollout_every < 1 or s.d_steps < 1 or s.gumbel_tau <= 0 or s.temperature <= 0:
        raise ValueError(
            f"config.seqgan: rollouts={s.rollouts} >= 0, rollout_every={s.rollout_every} >= 1, d_steps={s.d_steps}"
            f" >= 1, gumbel_tau={s.gumbel_tau} > 0 and temperature={s.temperature} > 0 are required"
        )
    if not 0.0 <= s.baseline_decay < 1.0 or s.mle_weight < 0:
        raise ValueError(f"config.seqgan: baseline_decay={s.baseline_decay} in [0, 1), mle_weight={s.mle_weight} >= 0")


def idle_for(tx: optax.GradientTransformation, k: int) -> optax.GradientTransformation:
    """`tx` after k zero updates that leave its state as initialised (Adam starts fresh when G starts)."""

    def init(params):
        return {"count": jnp.zeros((), jnp.int32), "inner": tx.init(params)}

    def update(grads, state, params=None):
        def idle():
            return jax.tree.map(jnp.zeros_like, grads), state["inner"]

        updates, inner = jax.lax.cond(state["count"] < k, idle, lambda: tx.update(grads, state["inner"], params))
        return updates, {"count": state["count"] + 1, "inner": inner}

    return optax.GradientTransformation(init, update)


class SeqGANTask:
    name = "seqgan"
    lm_head = True

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> SeqGANTask:
        return cls(config, workdir)

    def __init__(self, config: ml_collections.ConfigDict, workdir):
        if "seqgan" not in config:
            raise ValueError(
                "task.name='seqgan' needs a config.seqgan section; start from configs/gan/shakespeare_seqgan.py"
            )
        if config.peft.method != "full" or models.family_of(config.model).name != "gpt":
            raise ValueError(
                "task.name='seqgan' trains a whole GPT generator: set peft.method='full', model.family='gpt'"
            )
        self.config, self.s, d = config, config.seqgan, config.data
        splits = load_text_splits(d.dataset, manual_dir=d.manual_dir, data_dir=d.tfds_dir)
        self.backbone = Backbone(
            config, as_path(workdir),
            lambda: build_tokenizer(d.tokenizer, splits["train"], vocab_size=d.get("vocab_size"), path=d.get("tokenizer_path")),
        )  # fmt: skip
        self.tokenizer, self.model_cfg = self.backbone.tokenizer, self.backbone.model_cfg
        _check(self.s, self.model_cfg.block_size)
        self.seq_len = self.s.seq_len
        self.d_from_generator = self.s.discriminator.get("init", "random") == "generator"
        self.d_pretrain_steps = int(self.s.get("d_pretrain_steps", 0))
        if self.d_from_generator:
            self.d_cfg: ModelConfig = dataclasses.replace(
                self.model_cfg, block_size=self.seq_len, dropout=self.s.discriminator.dropout
            )
        else:
            self.d_cfg = model_config_from(
                {k: v for k, v in self.s.discriminator.items() if k not in ("pooling", "init")},
                vocab_size=self.model_cfg.vocab_size,
                block_size=self.seq_len,
            )
        self.tokens = {split: np.asarray(self.tokenizer.encode(text)) for split, text in splits.items()}
        t = config.train
        self.batcher = data_lib.TokenBatcher(self.tokens["train"], t.batch_size, self.seq_len, seed=config.seed)

    # -- model
    def init(self, rng, *pretrained):
        g_rng, d_rng, h_rng = jax.random.split(rng, 3)
        generator = nn.meta.unbox(init_params(self.model_cfg, g_rng))
        if pretrained:
            generator = graft(generator, pretrained[0])
        head = {"kernel": 0.02 * jax.random.normal(h_rng, (self.d_cfg.n_embd, 1)), "bias": jnp.zeros((1,))}
        d_backbone = nn.meta.unbox(init_params(self.d_cfg, d_rng))
        if self.d_from_generator:  # G's weights (a copy: the two train apart), its positions cut to seq_len
            d_backbone = {k: v[: self.seq_len] if k == "wpe" else v for k, v in generator.items() if k != "lm_head"}
        params = {"generator": generator, "discriminator": {"backbone": d_backbone, "head": head}}
        if self.s.baseline == "ema":
            params["baseline"] = {"value": jnp.asarray(0.5, jnp.float32)}  # D's reward before it learns anything
        return params, {}

    def pretrained(self):
        return self.backbone.pretrained()

    def d_logits(self, d_params, ids_BxL=None, onehot_BxLxV=None):
        """D's logit per row (> 0: real), from token ids or from (soft) one-hot rows through its embeddings."""
        gpt = d_params["backbone"]
        embeds = None if onehot_BxLxV is None else onehot_BxLxV @ gpt["wte"].astype(jnp.float32)
        if ids_BxL is None:
            ids_BxL = jnp.zeros(onehot_BxLxV.shape[:2], jnp.int32)
        x_BxLxD = GPT(self.d_cfg).apply({"params": gpt}, ids_BxL, features=True, embeds_BxLxD=embeds)
        lengths_B = jnp.full(ids_BxL.shape[:1], ids_BxL.shape[1], jnp.int32)
        pooled_BxD = pool(x_BxLxD, lengths_B, self.s.discriminator.pooling)
        return (pooled_BxD @ d_params["head"]["kernel"] + d_params["head"]["bias"])[:, 0]

    def sample(self, g_params, real_BxL, rng, keep: int | None = None, temperature: float | None = None):
        """Rows continuing the real rows' prompts (or their first keep + 1 tokens) by sampling G."""
        keep_B = jnp.full(real_BxL.shape[:1], self.s.prompt_len - 1 if keep is None else keep)
        temp = self.s.temperature if temperature is None else temperature
        return jax.lax.stop_gradient(fill(self.model_cfg, g_params, real_BxL, keep_B, rng, temp))

    def reward(self, d_params, ids_BxL):
        return jax.nn.sigmoid(jax.lax.stop_gradient(self.d_logits(d_params, ids_BxL)))

    def nll_BxL(self, g_params, ids_BxL, targets_BxL, temperature: float = 1.0):
        logits_BxLxV = GPT(self.model_cfg).apply({"params": g_params}, ids_BxL) / temperature
        return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, targets_BxL)

    # -- losses
    def d_loss(self, params, frozen, batch, rng):
        del frozen
        real_BxL = batch["inputs"]
        fake_BxL = self.sample(params["generator"], real_BxL, rng)
        d = lambda ids: self.d_logits(params["discriminator"], ids)
        loss_B = gan_losses.d_loss("non_saturating", d(real_BxL), d(fake_BxL))
        return loss_B.sum(), jnp.asarray(real_BxL.shape[0], jnp.float32)

    def _mle(self, g_params, batch):
        if not self.s.mle_weight:
            return 0.0
        return self.s.mle_weight * self.nll_BxL(g_params, batch["inputs"], batch["targets"]).mean(-1).sum()

    def rewards_BxL(self, params, fake_BxL, rng):
        """Per-token rewards: the sequence's D probability, or SeqGAN's Monte-Carlo rollout values."""
        length, s = fake_BxL.shape[1], self.s
        final_B = self.reward(params["discriminator"], fake_BxL)
        if not s.rollouts:
            return jnp.broadcast_to(final_B[:, None], fake_BxL.shape)
        points = pg.checkpoints(s.prompt_len, length, s.rollout_every)
        starts = jnp.repeat(jnp.asarray(points[:-1]), s.rollouts * fake_BxL.shape[0])  # [C-1 * M * B]
        tiled = jnp.tile(fake_BxL, (len(points[:-1]) * s.rollouts, 1))
        done = fill(self.model_cfg, params["generator"], tiled, starts, rng, s.temperature)
        q_CxMxB = self.reward(params["discriminator"], done).reshape(len(points) - 1, s.rollouts, -1)
        q_BxC = jnp.concatenate([q_CxMxB.mean(1).T, final_B[:, None]], axis=1)
        return pg.token_rewards(q_BxC, points, length)

    def g_loss(self, params, frozen, batch, rng):
        """G's loss; 0 (not computed: lax.cond runs one branch) while D pretrains."""
        if not self.d_pretrain_steps:
            return self._g_loss(params, frozen, batch, rng)
        count = jnp.asarray(batch["inputs"].shape[0], jnp.float32)
        return jax.lax.cond(
            batch["step_B"][0] < self.d_pretrain_steps,
            lambda: (jnp.zeros((), jnp.float32), count),
            lambda: self._g_loss(params, frozen, batch, rng),
        )

    def _g_loss(self, params, frozen, batch, rng):
        del frozen
        g, real_BxL, s = params["generator"], batch["inputs"], self.s
        b, length = real_BxL.shape
        if s.estimator == "gumbel":
            onehot_BxLxV, _ = gumbel_fill(self.model_cfg, g, real_BxL, s.prompt_len, rng, s.gumbel_tau, s.temperature)
            adv_B = gan_losses.g_loss(
                "non_saturating", self.d_logits(params["discriminator"], onehot_BxLxV=onehot_BxLxV)
            )
            return s.adversarial_weight * adv_B.sum() + self._mle(g, batch), jnp.asarray(b, jnp.float32)
        sample_rng, rollout_rng = jax.random.split(rng)
        fake_BxL = self.sample(g, real_BxL, sample_rng)
        logp_BxL = -self.nll_BxL(g, fake_BxL[:, :-1], fake_BxL[:, 1:], s.temperature)  # position s predicts s + 1
        logp_BxL = jnp.pad(logp_BxL, ((0, 0), (1, 0)))
        rewards_BxL = self.rewards_BxL(params, fake_BxL, rollout_rng)
        if s.baseline == "mean":
            base_BxL = pg.leave_one_out_mean(rewards_BxL)
        elif s.baseline == "ema":
            base_BxL = jnp.broadcast_to(params["baseline"]["value"], rewards_BxL.shape)
        else:
            base_BxL = jnp.zeros_like(rewards_BxL)
        mask_BxL = (jnp.arange(length) >= s.prompt_len).astype(jnp.float32)[None]
        surrogate = pg.reinforce_loss(logp_BxL, rewards_BxL, base_BxL, mask_BxL) / (length - s.prompt_len)
        return s.adversarial_weight * surrogate + self._mle(g, batch), jnp.asarray(b, jnp.float32)

    def baseline_loss(self, params, frozen, batch, rng):
        """0.5 (b - mean reward)^2: one SGD step with lr 1 - decay is b <- decay b + (1 - decay) mean reward."""
        del frozen
        fake_BxL = self.sample(params["generator"], batch["inputs"], rng)
        target = self.reward(params["discriminator"], fake_BxL).mean()
        return 0.5 * (params["baseline"]["value"] - target) ** 2, jnp.asarray(1.0)

    def updates(self, tx, schedule):
        del tx, schedule  # config.optim is unused: each player has its own section
        steps, dims = self.config.train.num_steps, models.get("gpt").matrix_dims
        k = self.d_pretrain_steps
        d_tx, d_sched = make_optimizer(self.s.d_optim, steps, dims)
        g_tx, g_sched = make_optimizer(self.s.g_optim, max(steps - k, 1), dims)
        if k:
            g_tx = idle_for(g_tx, k)
            g_sched = lambda t, f=g_sched: jnp.where(t < k, 0.0, f(jnp.maximum(t - k, 0)))
        out = [Update(self.d_loss, d_tx, d_sched, "discriminator")] * self.s.d_steps
        out.append(Update(self.g_loss, g_tx, g_sched, "generator"))
        if self.s.baseline == "ema":
            decay = ema_lr(self.s.baseline_decay)
            out.append(Update(self.baseline_loss, optax.sgd(decay), decay, "baseline"))
        return out

    def loss(self):
        raise NotImplementedError("the seqgan task trains through updates(); it has no single loss")

    def wrap_optimizer(self, tx):
        return tx

    def metrics(self):
        """val_loss: G's NLL on held-out real windows (Caccia et al.'s diversity axis); val_d_accuracy:
        D's share right on those windows and on G's continuations of their prompts (fixed noise);
        val_reward: D's mean probability that a sample is real."""

        def metrics(params, frozen, batch):
            del frozen
            real_BxL = batch["inputs"]
            b = real_BxL.shape[0]
            nll = self.nll_BxL(params["generator"], real_BxL, batch["targets"]).sum()
            fake_BxL = self.sample(params["generator"], real_BxL, jax.random.key(EVAL_SAMPLE_SEED))
            real_B, fake_B = (
                self.d_logits(params["discriminator"], real_BxL),
                self.d_logits(params["discriminator"], fake_BxL),
            )
            right = (real_B > 0).sum() + (fake_B < 0).sum()
            return {
                "val_loss": (nll, real_BxL.size),
                "val_d_accuracy": (right, 2 * b),
                "val_d_loss": (gan_losses.d_loss("non_saturating", real_B, fake_B).sum(), b),
                "val_reward": (jax.nn.sigmoid(fake_B).sum(), b),
            }

        return metrics

    # -- data
    def train_batches(self, step, k, process_index, process_count):
        out = self.batcher.batches(step, k, process_index=process_index, process_count=process_count)
        if self.d_pretrain_steps:  # the step of each row: G's loss knows whether D is still pretraining
            k_, b, _ = out["inputs"].shape
            out["step_B"] = np.broadcast_to(np.arange(step, step + k_, dtype=np.int32)[:, None], (k_, b)).copy()
        return out

    def eval_batches(self, process_index, process_count):
        t = self.config.train
        return data_lib.eval_batches(
            self.tokens["validation"], t.batch_size, self.seq_len, t.eval_batches, self.config.seed,
            process_index=process_index, process_count=process_count,
        )  # fmt: skip

    # -- end of run
    def finish(self, trainer, state, workdir, best_state=None):
        del trainer, best_state
        n = self.s.num_samples
        if n <= 0 or jax.process_index() != 0:
            return {}
        real = jnp.asarray(
            data_lib.eval_batches(self.tokens["validation"], n, self.seq_len, 1, self.config.seed + 7)["inputs"][0]
        )
        g = jax.device_get(state.params["generator"])
        rows = np.asarray(jax.jit(lambda p, r: self.sample(p, r, jax.random.key(EVAL_SAMPLE_SEED)))(g, real))
        p = self.s.prompt_len
        text = "\n\n".join(
            f"[{self.tokenizer.decode(r[:p].tolist())}]{self.tokenizer.decode(r[p:].tolist())}" for r in rows
        )
        (as_path(workdir) / "samples.txt").write_text(text + "\n")
        return {"samples_file": str(as_path(workdir) / "samples.txt")}
