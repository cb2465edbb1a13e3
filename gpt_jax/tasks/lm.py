"""Language-model pretraining on a text corpus, with a pluggable objective (gpt_jax.objectives)."""

from __future__ import annotations

import zlib

import ml_collections
import numpy as np

from gpt_jax import data as data_lib
from gpt_jax import objectives
from gpt_jax.config import ModelConfig
from gpt_jax.train import lm_init, lm_loss, lm_metrics

OBJECTIVE_SALT = zlib.crc32(b"objective")


class LMTask:
    name = "lm"

    def __init__(self, config: ml_collections.ConfigDict, tokenizer, tokens: dict[str, np.ndarray], model_cfg: ModelConfig):
        self.config, self.tokenizer, self.model_cfg = config, tokenizer, model_cfg
        self.objective = objectives.get(config.get("objective", "causal"), tokenizer.vocab_size)
        t, block = config.train, model_cfg.block_size
        self.seq_len, self.lm_head = block, True
        self.batcher = data_lib.TokenBatcher(tokens["train"], t.batch_size, block, seed=config.seed)
        self.validation = tokens["validation"]

    @staticmethod
    def extra_tokens(config) -> int:
        """Ids the objective appends after the tokenizer's vocabulary (FIM/MLM sentinels)."""
        return objectives.get(config.get("objective", "causal"), 1).extra_tokens

    def init(self, rng):
        return lm_init(self.model_cfg)(rng)

    def pretrained(self) -> tuple:
        return ()

    def loss(self):
        return lm_loss(self.model_cfg)

    def metrics(self):
        return lm_metrics(self.model_cfg)  # plain causal loss on plain windows whatever the objective

    def wrap_optimizer(self, tx):
        return tx

    def train_batches(self, step, k, process_index, process_count):
        b = self.batcher.batches(step, k, process_index=process_index, process_count=process_count)
        if self.objective.name == "causal":
            return b
        windows_KxBxW = np.concatenate([b["inputs"], b["targets"][..., -1:]], axis=-1)
        # One generator per step (not per call): a step's batch does not depend on steps_per_call.
        per_step = [
            self.objective.make_batch(windows_KxBxW[i : i + 1], np.random.default_rng([self.config.seed, OBJECTIVE_SALT, step + i, process_index]))
            for i in range(k)
        ]
        return {key: np.concatenate([p[key] for p in per_step]) for key in per_step[0]}

    def eval_batches(self, process_index, process_count):
        t = self.config.train
        return data_lib.eval_batches(
            self.validation,
            t.batch_size,
            self.model_cfg.block_size,
            t.eval_batches,
            self.config.seed,
            process_index=process_index,
            process_count=process_count,
        )

    def finish(self, trainer, state, workdir, best_state=None):
        s = self.config.sample
        if s.num_tokens <= 0 or self.objective.name == "mlm":
            return {}
        from gpt_jax.trainer import sample_text

        return {"sample": sample_text(trainer, state.params, s)}
