"""Sequence classification: a label head on a GPT backbone (last non-pad token or mean pooling)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import gpt_jax.data.labelled as labelled
from gpt_jax.analysis.classification_report import classification_report, format_report
from gpt_jax.data.tokenizers import build_tokenizer
from gpt_jax.model import GPT
from gpt_jax.tasks.backbone import Backbone, epoch_batches, padded_rows

POOLINGS = ("last", "mean")


def pool(x_BxLxD, lengths_B, how: str):
    """One vector per row from the hidden states of its `lengths` real (left-aligned) tokens."""
    if how == "last":  # causal: the last real token has seen the whole text
        return jnp.take_along_axis(x_BxLxD, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
    real_BxL = (jnp.arange(x_BxLxD.shape[1])[None] < lengths_B[:, None]).astype(x_BxLxD.dtype)
    return (x_BxLxD * real_BxL[..., None]).sum(1) / jnp.maximum(real_BxL.sum(1, keepdims=True), 1.0)


class ClassifyTask:
    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir) -> "ClassifyTask":
        return cls(config, workdir)

    name = "classify"

    def __init__(self, config: ml_collections.ConfigDict, workdir):
        task, d = config.task, config.data
        if task.pooling not in POOLINGS:
            raise ValueError(f"task.pooling={task.pooling!r} is not one of {POOLINGS}")
        if not task.dataset:
            raise ValueError("task.dataset is not set; e.g. --config.task.dataset=sst2")
        self.config = config
        splits, self.label_names = labelled.load_labelled(task.dataset, manual_dir=d.manual_dir, data_dir=d.tfds_dir)
        self.backbone = Backbone(
            config,
            workdir,
            lambda: build_tokenizer(
                d.tokenizer, "\n".join(splits["train"][0]), vocab_size=d.get("vocab_size"), path=d.get("tokenizer_path")
            ),
        )
        self.tokenizer, self.model_cfg = self.backbone.tokenizer, self.backbone.model_cfg
        self.max_len = min(task.max_len or self.model_cfg.block_size, self.model_cfg.block_size)
        self.seq_len, self.lm_head = self.max_len, False
        self.data = {
            split: labelled.encode_labelled(self.tokenizer, texts, labels, self.max_len)
            for split, (texts, labels) in splits.items()
        }
        self.num_labels = len(self.label_names)

    # -- model
    def init(self, rng, *pretrained):
        backbone_rng, head_rng = jax.random.split(rng)
        trainable, frozen = self.backbone.init(backbone_rng, *pretrained)
        d = self.model_cfg.n_embd
        head = {
            "kernel": 0.02 * jax.random.normal(head_rng, (d, self.num_labels), jnp.float32),
            "bias": jnp.zeros((self.num_labels,), jnp.float32),
        }
        return {"backbone": trainable, "head": head}, frozen

    def pretrained(self):
        return self.backbone.pretrained()

    def logits(self, params, frozen, batch, rng=None):
        gpt = self.backbone.gpt_params(params["backbone"], frozen, rng)
        x_BxLxD = GPT(self.model_cfg).apply(
            {"params": gpt},
            batch["inputs"],
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": jax.random.fold_in(rng, 1)},
            features=True,
        )
        pooled_BxD = pool(x_BxLxD, batch["lengths"], self.config.task.pooling)
        return pooled_BxD @ params["head"]["kernel"] + params["head"]["bias"]

    def loss(self):
        method = self.backbone.method

        def loss(params, frozen, batch, rng):
            logits_BxC = self.logits(params, frozen, batch, rng)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["labels"]).sum()
            count = jnp.asarray(batch["labels"].shape[0], jnp.float32)
            return ce + count * method.regularizer(params["backbone"]), count

        return loss

    def metrics(self):
        def metrics(params, frozen, batch):
            logits_BxC = self.logits(params, frozen, batch)
            valid_B = batch["labels"] >= 0  # padding rows of the last eval batch carry label -1
            labels_B = jnp.maximum(batch["labels"], 0)
            ce_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)
            n = valid_B.sum()
            correct = ((logits_BxC.argmax(-1) == labels_B) & valid_B).sum()
            return {"val_loss": (jnp.where(valid_B, ce_B, 0.0).sum(), n), "val_accuracy": (correct, n)}

        return metrics

    def wrap_optimizer(self, tx):
        return self.backbone.wrap_optimizer(tx, "head")

    # -- data
    def train_batches(self, step, k, process_index, process_count):
        return epoch_batches(
            self.data["train"],
            self.config.train.batch_size,
            self.config.seed,
            step,
            k,
            "classify",
            process_index,
            process_count,
        )

    def eval_batches(self, process_index, process_count, split="validation"):
        return padded_rows(
            self.data[split], self.config.train.batch_size, process_index, process_count, {"labels": -1, "lengths": 1}
        )

    # -- end of run
    def predict(self, trainer, params, frozen, split: str) -> np.ndarray:
        batches = trainer.to_device(self.eval_batches(jax.process_index(), jax.process_count(), split))
        fn = jax.jit(lambda p, f, b: jax.lax.map(lambda one: self.logits(p, f, one).argmax(-1), b))
        with trainer.rules():
            preds = np.asarray(jax.device_get(fn(params, frozen, batches))).reshape(-1)
        return preds[: len(self.data[split]["labels"])]

    def finish(self, trainer, state, workdir, best_state=None):
        use = best_state or state
        out = {"report_from_step": int(jax.device_get(use.step))}
        reports = {}
        for split in ("validation", "test"):
            if split not in self.data:
                continue
            preds = self.predict(trainer, use.params, use.frozen, split)
            reports[split] = classification_report(self.data[split]["labels"], preds, self.label_names)
            out[f"{split}_accuracy"] = reports[split]["accuracy"]
            out[f"{split}_macro_f1"] = reports[split]["macro_f1"]
        out.update(self.backbone.finish(state, use, workdir, self.config.peft))
        if jax.process_index() == 0:
            (workdir / "label_map.json").write_text(json.dumps(dict(enumerate(self.label_names)), indent=2))
            (workdir / "report.json").write_text(json.dumps({"reports": reports, **out}, indent=2, default=str))
            text = "\n\n".join(f"== {split} ==\n{format_report(r)}" for split, r in reports.items())
            (workdir / "report.txt").write_text(text + "\n")
            print(text)
        return out
