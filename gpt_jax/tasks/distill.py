"""Knowledge distillation (Hinton et al. 2015) for language modelling: a student GPT trained on the run's
corpus against a frozen teacher (any workdir) with

  loss = kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + hard_weight * CE(student, targets)

per token (T = distill.temperature; T^2 keeps the soft term's gradient scale independent of T). The
teacher sits in the state's frozen tree (saved with each checkpoint, never updated); the student is the
trainable tree under "backbone", so the workdir loads like a full fine-tune (gpt_jax.workdir). Validation
reports the student's plain cross entropy (val_loss, comparable with a run trained from scratch).

Config (configs/distill/*.py): distill.teacher (a workdir), distill.temperature, distill.kl_weight,
distill.hard_weight; the student is config.model, its data config.data (the teacher's vocabulary).
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gpt_jax.compression.quantize import dequantize_tree
from gpt_jax.models import registry as models
from gpt_jax.objectives.loss import causal_lm_loss, lm_metrics
from gpt_jax.tasks.base import OnLMBatches
from gpt_jax.tasks.lm import LMTask
from gpt_jax.workdir import load_run, read_run


def distill_section(config, teacher_hint: str):
    """config.distill, checked: a teacher set, temperature > 0, non-negative weights."""
    d = config.get("distill")
    if not d or not d.get("teacher"):
        raise ValueError(f"config.distill.teacher is not set; pass --config.distill.teacher={teacher_hint}")
    if d.temperature <= 0 or d.kl_weight < 0 or d.hard_weight < 0:
        raise ValueError("distill.temperature must be > 0 and distill.kl_weight, distill.hard_weight >= 0")
    return d


def loss_weights(d) -> tuple[float, float, float]:
    """(temperature, kl_weight, hard_weight) of a checked config.distill."""
    return float(d.temperature), float(d.kl_weight), float(d.hard_weight)


def distill_kl(student_BxLxV, teacher_BxLxV, temperature: float, weights_BxL=None):
    """(sum over tokens of T^2 * KL(p_teacher^T || p_student^T), token count), float32."""
    t = jnp.float32(temperature)
    log_s = jax.nn.log_softmax(student_BxLxV.astype(jnp.float32) / t, axis=-1)
    log_t = jax.nn.log_softmax(teacher_BxLxV.astype(jnp.float32) / t, axis=-1)
    kl_BxL = jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1) * t * t
    if weights_BxL is None:
        return kl_BxL.sum(), jnp.asarray(kl_BxL.size, jnp.float32)
    w = weights_BxL.astype(jnp.float32)
    return (kl_BxL * w).sum(), w.sum()


class DistillTask(OnLMBatches):
    name = "distill"

    def __init__(self, config: ml_collections.ConfigDict, lm: LMTask, teacher_cfg, teacher_family, teacher_path):
        d = config.distill
        self.config, self.lm = config, lm
        self.tokenizer, self.model_cfg, self.family = lm.tokenizer, lm.model_cfg, lm.family
        self.seq_len, self.lm_head = lm.seq_len, lm.lm_head
        self.teacher_cfg, self.teacher_family, self.teacher_path = teacher_cfg, teacher_family, teacher_path
        self.temperature, self.kl_weight, self.hard_weight = loss_weights(d)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> DistillTask:
        d = distill_section(config, "<teacher workdir>")
        if config.get("objective", "causal") != "causal":
            raise ValueError(f"distillation trains the causal objective; drop --config.objective={config.objective}")
        teacher_config, teacher_cfg = read_run(d.teacher)
        lm_config = ml_collections.ConfigDict(config.to_dict())
        lm_config.task.name = "lm"
        lm = LMTask.from_config(lm_config, workdir)
        if teacher_cfg.vocab_size != lm.model_cfg.vocab_size:
            raise ValueError(
                f"distill.teacher={d.teacher} has a vocabulary of {teacher_cfg.vocab_size} ids, the student's data "
                f"{lm.model_cfg.vocab_size}; distill from a teacher trained with the student's tokenizer"
            )
        if teacher_cfg.block_size < lm.model_cfg.block_size and teacher_cfg.pos == "learned":
            raise ValueError(
                f"distill.teacher={d.teacher} has block_size {teacher_cfg.block_size} < the student's "
                f"{lm.model_cfg.block_size}; lower --config.model.block_size"
            )
        return cls(config, lm, teacher_cfg, models.family_of(teacher_config.model), d.teacher)

    def init(self, rng, teacher=None):
        """(random student, frozen teacher); without the teacher's weights (shapes only) a random one."""
        student_rng, teacher_rng = jax.random.split(rng)
        student, _ = self.lm.init(student_rng)
        if teacher is None:
            teacher = nn.meta.unbox(self.teacher_family.init(self.teacher_cfg, teacher_rng))
        return {"backbone": student}, {"teacher": teacher}

    def pretrained(self) -> tuple:
        return (jax.device_get(dequantize_tree(load_run(self.teacher_path)[2])),)

    def loss(self):
        student = self.family.module(self.model_cfg)
        teacher = self.teacher_family.module(self.teacher_cfg)
        t, kw, hw = self.temperature, self.kl_weight, self.hard_weight

        def loss(params, frozen, batch, rng):
            s_logits = student.apply(
                {"params": params["backbone"]},
                batch["inputs"],
                deterministic=rng is None,
                rngs=None if rng is None else {"dropout": rng},
            )
            t_logits = jax.lax.stop_gradient(teacher.apply({"params": frozen["teacher"]}, batch["inputs"]))
            ce, count = causal_lm_loss(s_logits, batch)
            kl, _ = distill_kl(s_logits, t_logits, t, batch.get("weights"))
            return kw * kl + hw * ce, count

        return loss

    def metrics(self):
        plain = lm_metrics(self.model_cfg, family=self.family)
        return lambda params, frozen, batch: plain(params["backbone"], {}, batch)

    def finish(self, trainer, state, workdir, best_state=None):
        s = self.config.sample
        if s.num_tokens <= 0:
            return {}
        return {"sample": self.lm.sample_text(state.params["backbone"], s, trainer.mesh)}
