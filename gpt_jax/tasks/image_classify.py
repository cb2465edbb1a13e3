"""Image classification: the "vit" family (encoder + mean-pooled linear head) on the VQA task's image split.

The ViT-classifier baseline beside the multimodal model: same images, same held-out split, same augmentation.
"""

from __future__ import annotations

import json
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gpt_jax.data import vqa
from gpt_jax.models import vit
from gpt_jax.tasks.backbone import padded_rows
from gpt_jax.tasks.vqa import load_splits, vqa_section


class ImageClassifyTask:
    name = "image_classify"
    tokenizer = None  # no text

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir) -> ImageClassifyTask:
        return cls(config)

    def __init__(self, config: ml_collections.ConfigDict):
        if config.model.get("family") != "vit":
            raise ValueError(
                f"task image_classify runs the vit family, not model.family={config.model.get('family')!r}"
            )
        self.config, self.v = config, vqa_section(config)
        self.model_cfg = vit.config_from(config.model, 0)
        self.splits = load_splits(self.v, config.data)
        size = self.splits["train"]["images"].shape[1]
        if size != self.model_cfg.image_size:
            raise ValueError(f"{self.v.dataset} images are {size}x{size}; set model.vit.image_size={size}")
        self.seq_len, self.lm_head = 1, False  # throughput counts images
        self.aug = {"shift": float(self.v.augment_shift), "rotate": float(self.v.augment_rotate)}

    def init(self, rng):
        return nn.meta.unbox(vit.init(self.model_cfg, rng)), {}

    def pretrained(self) -> tuple:
        return ()

    def logits(self, params, batch, rng=None):
        return vit.ViTClassifier(self.model_cfg).apply(
            {"params": params},
            batch["images"],
            deterministic=rng is None,
            rngs=None if rng is None else {"dropout": jax.random.fold_in(rng, 1)},
        )

    def loss(self):
        def loss(params, frozen, batch, rng):
            ce = optax.softmax_cross_entropy_with_integer_labels(self.logits(params, batch, rng), batch["labels"])
            return ce.sum(), jnp.asarray(ce.shape[0], jnp.float32)

        return loss

    def metrics(self):
        def metrics(params, frozen, batch):
            logits_BxC = self.logits(params, batch)
            valid_B = batch["labels"] >= 0
            labels_B = jnp.maximum(batch["labels"], 0)
            ce_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)
            correct = ((logits_BxC.argmax(-1) == labels_B) & valid_B).sum()
            return {
                "val_loss": (jnp.where(valid_B, ce_B, 0.0).sum(), valid_B.sum()),
                "val_accuracy": (correct, valid_B.sum()),
            }

        return metrics

    def wrap_optimizer(self, tx):
        return tx

    def train_batches(self, step, k, process_index, process_count):
        """Random images (with replacement) per step, augmented: a pure function of the step."""
        c, split = self.config, self.splits["train"]
        b_local = c.train.batch_size // process_count
        images, labels = [], []
        for s in range(step, step + k):
            rng = np.random.default_rng([c.seed, zlib.crc32(b"image_classify"), s])
            pick = rng.integers(0, len(split["labels"]), c.train.batch_size)
            x = split["images"][pick]
            if self.aug["shift"] or self.aug["rotate"]:
                x = vqa.augment(x, rng, self.aug["shift"], self.aug["rotate"])
            sl = slice(process_index * b_local, (process_index + 1) * b_local)
            images.append(x[sl, ..., None])
            labels.append(split["labels"][pick][sl])
        return {"images": np.stack(images).astype(np.float32), "labels": np.stack(labels).astype(np.int32)}

    def eval_batches(self, process_index, process_count):
        split = self.splits["validation"]
        data = {"images": split["images"][..., None].astype(np.float32), "labels": split["labels"].astype(np.int32)}
        return padded_rows(data, self.config.train.batch_size, process_index, process_count, {"labels": -1})

    def finish(self, trainer, state, workdir, best_state=None):
        use = best_state or state
        got = trainer.evaluate(use.params, use.frozen)
        out = {"held_out_images": len(self.splits["validation"]["labels"]), "held_out_accuracy": got["val_accuracy"]}
        if jax.process_index() == 0:
            (workdir / "report.json").write_text(json.dumps(out, indent=2))
        return out
