"""The pruned fine-tune: a wrapper task around LMTask that starts from a source run's weights pruned by
magnitude and trains them with `prune.masked` (masks in the optimizer state: saved, resumed), or with
prune.gradual_steps > 0 starts dense and prunes on a schedule (gpt_jax.compression.gradual).
prune.inner="classify" wraps ClassifyTask instead: its backbone pruned, its class head dense, the
fine-tune on the classification loss (gpt_jax.compression.classify_run).

Config: the source run's own config.json with task.name = "prune" and a `prune` section
{source, sparsity, pattern, scope, inner}; `finetune_config` builds it, gpt_jax.compression.finetune runs it.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections
import numpy as np

from gpt_jax.compression import classify_run
from gpt_jax.compression.gradual import GradualSchedule, gradual_masked
from gpt_jax.compression.prune import apply_masks, check_sparsity, magnitude_masks, masked
from gpt_jax.compression.stored import quant_record
from gpt_jax.run_config import task_name
from gpt_jax.tasks.base import OnLMBatches
from gpt_jax.tasks.classify import ClassifyTask
from gpt_jax.tasks.lm import LMTask
from gpt_jax.workdir import load_run, read_run_file


class PruneTask(OnLMBatches):
    name = "prune"

    def __init__(self, lm: LMTask | ClassifyTask, params, masks, schedule: GradualSchedule | None = None):
        self.lm, self.params, self.masks, self.schedule = lm, params, masks, schedule
        self.config, self.tokenizer, self.model_cfg = lm.config, lm.tokenizer, lm.model_cfg
        self.family, self.seq_len, self.lm_head = getattr(lm, "family", None), lm.seq_len, lm.lm_head
        self.inner = lm.name

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> PruneTask:
        p = config.prune
        if quant_record(p.source) is not None:
            raise ValueError(f"prune.source={p.source} is a quantized run; prune the float run, then quantize")
        inner = p.get("inner", "lm")
        lm_config = ml_collections.ConfigDict(config.to_dict())
        lm_config.task.name = inner
        if inner == "classify":  # {"backbone", "head"}: the backbone is pruned, the head stays dense
            lm, params = ClassifyTask.from_config(lm_config, workdir), classify_run.load_params(p.source)[0]
        else:
            lm, params = LMTask.from_config(lm_config, workdir), load_run(p.source)[2]
        sparsity = check_sparsity(p.get("sparsity"), p.get("pattern") or None)
        if p.get("gradual_steps", 0):  # dense start; the masks grow on the schedule inside the optimizer
            if p.get("pattern") or p.get("scope", "layer") != "layer":
                raise ValueError("--gradual_steps prunes unstructured per matrix: drop --pattern / --scope=global")
            schedule = GradualSchedule(sparsity, int(p.gradual_steps), int(p.get("mask_every", 10)))
            return cls(lm, params, None, schedule)
        gpt = classify_run.gpt_part(params, inner)
        gpt_masks = magnitude_masks(gpt, sparsity, scope=p.get("scope", "layer"), pattern=p.get("pattern") or None)
        all_kept = jax.tree.map(lambda x: np.ones(np.shape(x), bool), params)
        masks = classify_run.with_gpt_part(all_kept, gpt_masks, inner)
        return cls(lm, apply_masks(params, masks), masks)

    def init(self, rng, params=None):
        """The pruned weights; without them (shapes only, for the state's layout) a random init."""
        return (params, {}) if params is not None else self.lm.init(rng)

    def pretrained(self) -> tuple:
        return (jax.device_get(self.params),)  # host arrays: create_state places them on the run's mesh

    def loss(self):
        return self.lm.loss()

    def metrics(self):
        return self.lm.metrics()

    def wrap_optimizer(self, tx):
        if self.schedule is not None:  # masks over the GPT's matrices only (a class head stays dense)
            gpt = classify_run.gpt_part(self.params, self.inner)
            return gradual_masked(tx, self.schedule, classify_run.with_gpt_part({}, gpt, self.inner))
        return masked(tx, self.masks)

    def finish(self, trainer, state, workdir, best_state=None):
        return {}


def finetune_config(
    source, *, sparsity, pattern, scope, steps: int, lr: float, gradual_steps: int = 0, mask_every: int = 10
) -> ml_collections.ConfigDict:
    """The source run's config turned into a short masked fine-tune of its pruned weights (gradual_steps > 0:
    of its dense weights, pruned on the gradual schedule during the first gradual_steps updates)."""
    config = ml_collections.ConfigDict(read_run_file(source, "config.json"))
    inner = "classify" if task_name(config) == "classify" else "lm"
    config.task.name = "prune"
    config.prune = ml_collections.ConfigDict(
        {
            "source": str(source),
            "inner": inner,
            "sparsity": sparsity,
            "pattern": pattern or "",
            "scope": scope,
            "gradual_steps": gradual_steps,
            "mask_every": mask_every,
        }
    )
    t, o = config.train, config.optim
    t.num_steps, t.eval_every = steps, steps
    t.steps_per_call = min(t.steps_per_call, steps)
    o.lr, o.min_lr, o.decay_steps = lr, lr / 10, None
    o.warmup_steps = min(o.warmup_steps, max(steps // 10, 1))
    config.checkpoint.every = steps
    config.checkpoint.async_save = False
    return config
