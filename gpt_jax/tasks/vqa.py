"""Visual question answering on digit images: the "vlm" family trained on templated questions.

The loss is on the answer tokens only (and `<eos>`). Eval: val_loss, and exact match per question kind by
teacher-forced argmax over the whole answer: a row counts when every answer token and the `<eos>` after it
are the argmax given the true tokens before them, which is exactly when greedy decoding returns the answer.

Switches: `vqa.freeze` in FREEZES (sub-trees moved to the frozen state), `config.peft` on the LM (LoRA and
the other gpt_jax.peft methods, through their split/combine), `init_from` (a text GPT workdir grafted into
"lm"), `vqa.blank_images` (the no-image baseline: every image zero).
"""

from __future__ import annotations

import dataclasses
import json
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gpt_jax import peft
from gpt_jax.data import vqa
from gpt_jax.data.images import load_image_splits
from gpt_jax.data.tokenizers import load_tokenizer
from gpt_jax.models import vlm
from gpt_jax.peft.base import graft
from gpt_jax.tasks.backbone import load_base, padded_rows, per_key

log = logging.getLogger(__name__)

FREEZES = {"none": (), "encoder": ("vit",), "lm": ("lm",), "all_but_projector": ("vit", "lm")}


def vqa_section(config) -> ml_collections.ConfigDict:
    v = config.get("vqa")
    if v is None:
        raise ValueError("config.vqa is missing; start from configs/multimodal/digits_vqa.py")
    return v


def load_splits(v, d) -> dict:
    """{'train'|'validation': images [N, H, W] float32 in [0, 1], labels}: what the image tasks train on."""
    return load_image_splits(v.dataset, manual_dir=d.manual_dir, data_dir=d.tfds_dir)


class VQATask:
    name = "vqa"

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir) -> VQATask:
        return cls(config, workdir)

    def __init__(self, config: ml_collections.ConfigDict, workdir):
        v, d = vqa_section(config), config.data
        if v.freeze not in FREEZES:
            raise ValueError(f"vqa.freeze={v.freeze!r} is not one of {tuple(FREEZES)}")
        if config.model.get("family") != "vlm":
            raise ValueError(f"task vqa runs the vlm family, not model.family={config.model.get('family')!r}")
        self.config, self.v = config, v
        self.tokenizer = load_tokenizer(workdir) if (workdir / "tokenizer.json").exists() else vqa.build_tokenizer()
        self.method = peft.make_method(config.peft, config.train.num_steps)
        base_cfg = vlm.config_from(config.model, self.tokenizer.vocab_size)
        self._load_base = None
        if config.get("init_from"):  # the LM's architecture is the text GPT's; its vocabulary is ours
            lm_cfg, self._load_base, _ = load_base(config.init_from)
            lm_cfg = lm_cfg.replace(vocab_size=self.tokenizer.vocab_size, dropout=base_cfg.lm.dropout)
            base_cfg = dataclasses.replace(base_cfg, lm=lm_cfg)
        self.base_cfg = base_cfg  # the architecture model_config.json holds
        self.model_cfg = dataclasses.replace(base_cfg, lm=self.method.model_config(base_cfg.lm))
        self.rows = vqa.VQARows(self.tokenizer, base_cfg.num_image_tokens, base_cfg.max_images)
        if self.rows.length > base_cfg.lm.block_size:
            raise ValueError(
                f"the longest question row is {self.rows.length} tokens but model.block_size is "
                f"{base_cfg.lm.block_size}; set model.block_size >= {self.rows.length}"
            )
        self.seq_len, self.lm_head = self.rows.length, True
        self.splits = load_splits(v, d)
        size = self.splits["train"]["images"].shape[1]
        if size != base_cfg.vit.image_size:
            raise ValueError(f"{v.dataset} images are {size}x{size}; set model.vit.image_size={size}")
        self.aux = bool(v.get("aux_weight")) and "vit" not in FREEZES[v.freeze]  # a frozen encoder learns nothing
        self.mix = vqa.kind_mix(dict(v.mix))
        self.aug = {"shift": float(v.augment_shift), "rotate": float(v.augment_rotate)}
        self.eval_data = vqa.eval_rows(self.rows, self.splits["validation"])
        if v.blank_images:
            self.eval_data["images"][:] = 0.0

    # -- model
    def module(self):
        return vlm.VisionLanguageModel(self.model_cfg)

    def pretrained(self) -> tuple:
        if self._load_base is None:
            return ()
        base = self._load_base()
        return ({k: x for k, x in base.items() if k not in ("wte", "lm_head")},)  # another vocabulary

    def init(self, rng, *pretrained):
        init_rng, split_rng = jax.random.split(rng)
        params = nn.meta.unbox(vlm.init(self.model_cfg, init_rng))
        if pretrained:
            params["lm"] = graft(params["lm"], pretrained[0])
        lm_train, lm_base = self.method.split(params["lm"], split_rng)
        trainable = {"vit": params["vit"], "projector": params["projector"], "lm": lm_train}
        if self.aux:  # a digit head on the encoder's mean token (the auxiliary loss)
            e = self.model_cfg.vit.n_embd
            kernel = jax.random.normal(jax.random.fold_in(split_rng, 1), (e, 10), jnp.float32) / e**0.5
            trainable["aux_head"] = {"kernel": kernel, "bias": jnp.zeros((10,), jnp.float32)}
        frozen = {"lm_base": lm_base}
        for name in FREEZES[self.v.freeze]:
            frozen[name] = trainable.pop(name)
        return trainable, frozen

    def params(self, trainable, frozen, rng=None) -> dict:
        """The VLM's params from the two trees (the LM recombined by the PEFT method)."""
        return vlm.combine_params(self.method, trainable, frozen, rng)

    def logits(self, trainable, frozen, batch, rng=None, image_features: bool = False):
        images = batch["images"]
        if self.v.blank_images:
            images = jnp.zeros_like(images)
        return self.module().apply(
            {"params": self.params(trainable, frozen, rng)},
            batch["inputs"],
            images,
            batch["prefix_len"],
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": jax.random.fold_in(rng, 1)},
            image_features=image_features,
        )

    def aux_loss(self, trainable, pooled_BxNxE, digits_BxN):
        """Mean cross-entropy of the digit head on each real image's pooled encoder tokens: a direct signal
        for recognition, which the answer loss alone reaches only through the LM (slow from scratch)."""
        head = trainable["aux_head"]
        logits = pooled_BxNxE @ head["kernel"] + head["bias"]
        real = digits_BxN >= 0
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(digits_BxN, 0))
        return jnp.where(real, ce, 0.0).sum() / jnp.maximum(real.sum(), 1)

    def loss(self):
        def loss(trainable, frozen, batch, rng):
            aux = "aux_head" in trainable
            logits_BxLxV = self.logits(trainable, frozen, batch, rng, image_features=aux)
            if aux:
                logits_BxLxV, pooled_BxNxE = logits_BxLxV
            ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, batch["targets"])
            w_BxL = batch["weights"]
            reg = self.method.regularizer(trainable["lm"]) if "lm" in trainable else 0.0
            if aux:
                reg = reg + self.v.aux_weight * self.aux_loss(trainable, pooled_BxNxE, batch["digits"])
            count = w_BxL.sum()
            return (ce_BxL * w_BxL).sum() + count * reg, count

        return loss

    def metrics(self):
        def metrics(trainable, frozen, batch):
            logits_BxLxV = self.logits(trainable, frozen, batch)
            w_BxL = batch["weights"]
            ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, batch["targets"])
            wrong_BxL = (logits_BxLxV.argmax(-1) != batch["targets"]) & (w_BxL > 0)
            exact_B = ~wrong_BxL.any(axis=1)
            kind_B = batch["kind"]
            out = {"val_loss": ((ce_BxL * w_BxL).sum(), w_BxL.sum())}
            out["val_accuracy"] = ((exact_B & (kind_B >= 0)).sum(), (kind_B >= 0).sum())
            for i, kind in enumerate(vqa.KINDS):
                out[f"val_acc_{kind}"] = ((exact_B & (kind_B == i)).sum(), (kind_B == i).sum())  # summed over batches
            return out

        return metrics

    def wrap_optimizer(self, tx):
        wrapped = self.method.wrap_optimizer(tx)
        if wrapped is tx or "lm" in FREEZES[self.v.freeze]:
            return tx
        others = [k for k in ("vit", "projector") if k not in FREEZES[self.v.freeze]]
        others += ["aux_head"] if self.aux else []
        return per_key({"lm": wrapped, **{k: tx for k in others}})

    # -- data
    def train_batches(self, step, k, process_index, process_count):
        c = self.config
        return vqa.step_batches(
            self.rows,
            self.splits["train"],
            c.train.batch_size,
            c.seed,
            step,
            k,
            self.mix,
            self.aug,
            process_index,
            process_count,
        )

    def eval_batches(self, process_index, process_count):
        return padded_rows(self.eval_data, self.config.train.batch_size, process_index, process_count, {"kind": -1})

    # -- end of run
    def finish(self, trainer, state, workdir, best_state=None):
        use = best_state or state
        got = trainer.evaluate(use.params, use.frozen)
        chance = vqa.chance(self.eval_data)
        report = {
            "held_out_images": len(self.splits["validation"]["labels"]),
            "exact_match": {k: got[f"val_acc_{k}"] for k in vqa.KINDS},
            "chance": chance,
            "metric": "teacher-forced argmax exact match of every answer token and <eos> (= greedy decoding)",
        }
        out = {"report_from_step": int(jax.device_get(use.step)), **{f"chance_{k}": v for k, v in chance.items()}}
        out.update(peft.trainable_summary(use.params, use.frozen))
        if jax.process_index() == 0:
            (workdir / "vqa_report.json").write_text(json.dumps(report, indent=2))
            lines = [
                f"{k:>10}: {100 * report['exact_match'][k]:6.2f}%  (chance {100 * chance[k]:5.1f}%)" for k in vqa.KINDS
            ]
            print("\n".join(["exact match on the held-out images:", *lines]))
        return out
