"""Supervised instruction / dialogue tuning: chat-templated examples, loss on the replies only, packed."""

from __future__ import annotations

import ml_collections
import numpy as np

import gpt_jax.data.sft as sft
from gpt_jax.chat_template import ChatTemplate
from gpt_jax.data.tokenizers import build_tokenizer
from gpt_jax.objectives.loss import causal_lm_loss, lm_loss
from gpt_jax.tasks.backbone import Backbone, epoch_batches, padded_rows


class SFTTask:
    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir) -> "SFTTask":
        return cls(config, workdir)

    name = "sft"

    def __init__(self, config: ml_collections.ConfigDict, workdir):
        task, d = config.task, config.data
        if not task.dataset:
            raise ValueError("task.dataset is not set; e.g. --config.task.dataset=alpaca_seed_tasks or a JSONL path")
        self.config = config
        self.template = ChatTemplate.named(task.template)
        convs = sft.load_sft(task.dataset, manual_dir=d.manual_dir, seed=config.seed)
        self.backbone = Backbone(
            config,
            workdir,
            lambda: build_tokenizer(
                d.tokenizer,
                _all_text(self.template, convs["train"]),
                vocab_size=d.get("vocab_size"),
                path=d.get("tokenizer_path"),
            ),
        )
        self.tokenizer, self.model_cfg = self.backbone.tokenizer, self.backbone.model_cfg
        length = min(task.max_len or self.model_cfg.block_size, self.model_cfg.block_size)
        self.seq_len, self.lm_head = length, True
        rows = sft.pack if task.packing else sft.unpacked
        self.data = {}
        for split, items in convs.items():
            examples = sft.render_all(self.template, self.tokenizer, items)
            if split == "train" and task.packing:  # first-fit packs in order: shuffle once, seeded
                examples = [examples[i] for i in np.random.default_rng(config.seed).permutation(len(examples))]
            self.data[split] = rows(examples, length)
        self.examples = {split: len(items) for split, items in convs.items()}

    def init(self, rng, *pretrained):
        trainable, frozen = self.backbone.init(rng, *pretrained)
        return {"backbone": trainable}, frozen

    def pretrained(self):
        return self.backbone.pretrained()

    def loss(self):
        gpt_loss, method = lm_loss(self.model_cfg, causal_lm_loss), self.backbone.method

        def loss(params, frozen, batch, rng):
            gpt = self.backbone.gpt_params(params["backbone"], frozen, rng)
            total, count = gpt_loss(gpt, {}, batch, rng)
            return total + count * method.regularizer(params["backbone"]), count

        return loss

    def metrics(self):
        gpt_loss = lm_loss(self.model_cfg, causal_lm_loss)

        def metrics(params, frozen, batch):
            return {"val_loss": gpt_loss(self.backbone.gpt_params(params["backbone"], frozen), {}, batch, None)}

        return metrics

    def wrap_optimizer(self, tx):
        return self.backbone.wrap_optimizer(tx)

    def train_batches(self, step, k, process_index, process_count):
        return epoch_batches(
            self.data["train"],
            self.config.train.batch_size,
            self.config.seed,
            step,
            k,
            "sft",
            process_index,
            process_count,
        )

    def eval_batches(self, process_index, process_count):
        return padded_rows(self.data["validation"], self.config.train.batch_size, process_index, process_count, {})

    def finish(self, trainer, state, workdir, best_state=None):
        use = best_state or state
        return {"examples": self.examples, **self.backbone.finish(state, use, workdir, self.config.peft)}


def _all_text(template, convs) -> str:
    return "\n".join(template.render(system, turns[:-1], turns[-1][0]) + turns[-1][1] for system, turns in convs)
