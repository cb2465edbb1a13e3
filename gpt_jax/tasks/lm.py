"""Language-model pretraining on a text corpus, with a pluggable objective (gpt_jax.objectives)."""

from __future__ import annotations

import pathlib
import zlib

import ml_collections
import numpy as np

from gpt_jax import data as data_lib
from gpt_jax import objectives
from gpt_jax.generation.engine import generate
from gpt_jax.generation.options import GenerateOptions, undecodable_ids
from gpt_jax.generation.windowed import sample_windowed
from gpt_jax.models import registry as models
from gpt_jax.objectives.loss import lm_loss, lm_metrics
from gpt_jax.tasks.lm_state import lm_init

OBJECTIVE_SALT = zlib.crc32(b"objective")


class LMTask:
    name = "lm"

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        tokenizer,
        tokens: dict[str, np.ndarray] | None,
        model_cfg,
        *,
        grain_data=None,
    ):
        self.config, self.tokenizer, self.model_cfg = config, tokenizer, model_cfg
        self.family = models.family_of(config.model)
        self.objective = objectives.from_config(config, tokenizer.vocab_size)
        t, block = config.train, model_cfg.block_size
        self.seq_len, self.lm_head = block, True
        self.data_iterator = None  # a sequential stream whose position checkpoints carry (grain)
        if grain_data is not None:
            if not self.objective.plain_windows:
                raise ValueError(
                    "data.pipeline='grain' packs documents for the causal objective; set objective 'causal'"
                )
            from gpt_jax.data import grain_lm  # lazy: grain is needed only on data.pipeline='grain'

            self.grain = grain_lm.GrainLMData(grain_data, config, block)
            self.batcher = self.data_iterator = self.grain.stream
            return
        self.batcher = data_lib.TokenBatcher(tokens["train"], t.batch_size, block, seed=config.seed)
        self.validation = tokens["validation"]

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> "LMTask":
        if config.get("init_from"):
            raise ValueError(
                "config.init_from is for fine-tuning tasks; pretraining starts from scratch (or resumes its workdir)"
            )
        d = config.data
        tokenizer = data_lib.load_tokenizer(workdir) if (workdir / "tokenizer.json").exists() else None
        pipeline = d.get("pipeline", "random")  # .get: config.json files from before the key
        if pipeline == "grain":
            from gpt_jax.data import grain_lm  # lazy: grain is needed only on data.pipeline='grain'

            grain_data = grain_lm.prepare(config, tokenizer)
            vocab = grain_data.tokenizer.vocab_size + cls.extra_tokens(config)
            return cls(
                config, grain_data.tokenizer, None, models.build_model_config(config, vocab), grain_data=grain_data
            )
        if pipeline != "random":
            raise ValueError(f"data.pipeline={pipeline!r} is not one of 'random', 'grain'")
        tokenizer, tokens = data_lib.prepare_tokens(
            d.dataset,
            d.tokenizer,
            manual_dir=d.manual_dir,
            data_dir=d.tfds_dir,
            tokenizer=tokenizer,
            # .get: config.json files written before these keys existed lack them
            vocab_size=d.get("vocab_size"),
            tokenizer_path=d.get("tokenizer_path"),
        )
        model_cfg = models.build_model_config(config, tokenizer.vocab_size + cls.extra_tokens(config))
        return cls(config, tokenizer, tokens, model_cfg)

    @staticmethod
    def extra_tokens(config) -> int:
        """Ids the objective appends after the tokenizer's vocabulary (FIM/MLM sentinels)."""
        return objectives.from_config(config, 1).extra_tokens

    def init(self, rng):
        return lm_init(self.model_cfg, self.family)(rng)

    def pretrained(self) -> tuple:
        return ()

    def loss(self):
        return lm_loss(self.model_cfg, self.objective.loss, family=self.family)

    def metrics(self):
        return lm_metrics(
            self.model_cfg, family=self.family
        )  # plain causal loss on plain windows whatever the objective

    def wrap_optimizer(self, tx):
        return tx

    def train_batches(self, step, k, process_index, process_count):
        b = self.batcher.batches(step, k, process_index=process_index, process_count=process_count)
        if self.objective.plain_windows:
            return b
        windows_KxBxW = np.concatenate([b["inputs"], b["targets"][..., -1:]], axis=-1)
        # One generator per step (not per call): a step's batch does not depend on steps_per_call.
        per_step = [
            self.objective.make_batch(
                windows_KxBxW[i : i + 1],
                np.random.default_rng([self.config.seed, OBJECTIVE_SALT, step + i, process_index]),
            )
            for i in range(k)
        ]
        return {key: np.concatenate([p[key] for p in per_step]) for key in per_step[0]}

    def eval_batches(self, process_index, process_count):
        if self.data_iterator is not None:
            return self.grain.eval_batches(process_index, process_count)
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
        if s.num_tokens <= 0 or not self.objective.left_to_right:
            return {}
        return {"sample": self.sample_text(state.params, s, trainer.mesh)}

    def sample_text(self, params, s: ml_collections.ConfigDict, mesh) -> str:
        """The end-of-run sample: KV-cache generation on the training mesh, sliding past block_size
        (families without a cache: windowed sampling)."""
        options = GenerateOptions(
            max_new_tokens=s.num_tokens,
            temperature=s.temperature,
            top_k=s.top_k,
            seed=self.config.seed,
            banned_ids=undecodable_ids(self.tokenizer.vocab_size, self.model_cfg.vocab_size),  # objective sentinels
            slide=True,
        )
        prompt = self.tokenizer.encode(s.prompt)
        if self.family.kv_cache:
            ids = generate(self.model_cfg, params, [prompt], options, mesh=mesh)[0]
        else:
            ids = sample_windowed(
                self.family.module(self.model_cfg), params, prompt, self.model_cfg.block_size, options
            )
        return s.prompt + self.tokenizer.decode(ids)
