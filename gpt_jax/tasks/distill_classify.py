"""Knowledge distillation for sequence classification: a student classifier (gpt_jax.tasks.classify, e.g. 2
layers) trained on the labelled data against a frozen classify teacher (any classify workdir) with

  loss = kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + hard_weight * CE(student, label)

per example over the class logits (gpt_jax.tasks.distill.distill_kl, the LM task's term). The teacher's
backbone and head sit in the state's frozen tree (saved with each checkpoint, never updated); the student is
the trainable {"backbone", "head"} tree of a full fine-tune, so the workdir loads like a classify run.
Batches are the classify task's (same seed -> the same rows as the student trained from scratch), and
evaluation, early stopping and the classification report are the student's own.

Config (configs/distill/sst2.py): distill.teacher (a classify workdir on the student's tokenizer and label
set), distill.temperature, distill.kl_weight, distill.hard_weight; the student is config.model/task/data.
"""

from __future__ import annotations

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gpt_jax import peft
from gpt_jax.compression.quantize import dequantize_tree
from gpt_jax.data.tokenizers import load_tokenizer
from gpt_jax.model import GPT, init_params
from gpt_jax.models import registry as models
from gpt_jax.paths import as_path
from gpt_jax.run_config import task_name
from gpt_jax.tasks.classify import ClassifyTask, pool
from gpt_jax.tasks.distill import distill_kl, distill_section, loss_weights
from gpt_jax.workdir import load_run, load_state, read_run

# Training rows whose token ids must agree between teacher and student tokenizers (a cheap identity check).
TOKENIZER_CHECK_ROWS = 256


def class_distill_loss(student_BxC, teacher_BxC, labels_B, temperature, kl_weight, hard_weight):
    """(summed kl_weight * T^2 * KL(teacher/T || student/T) + hard_weight * CE(student, label), row count)."""
    kl, count = distill_kl(student_BxC, teacher_BxC, temperature)  # over the class axis: one term per row
    ce = optax.softmax_cross_entropy_with_integer_labels(student_BxC.astype(jnp.float32), labels_B).sum()
    return kl_weight * kl + hard_weight * ce, count


class DistillClassifyTask:
    name = "distill_classify"

    def __init__(self, config: ml_collections.ConfigDict, student: ClassifyTask, teacher_config, base_cfg):
        d = config.distill
        self.config, self.student = config, student
        self.tokenizer, self.model_cfg = student.tokenizer, student.model_cfg
        self.seq_len, self.lm_head = student.seq_len, False
        self.teacher_path, self.teacher_pooling = d.teacher, teacher_config.task.pooling
        # The teacher runs as its own classify task did: its base plus its PEFT method's modules.
        self.teacher_method = peft.make_method(teacher_config.peft, teacher_config.train.num_steps)
        self.teacher_cfg = self.teacher_method.model_config(base_cfg)
        self.temperature, self.kl_weight, self.hard_weight = loss_weights(d)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> DistillClassifyTask:
        d = distill_section(config, "<classify workdir>")
        if config.peft.method != "full":
            raise ValueError(f"the distilled student trains whole; drop --config.peft.method={config.peft.method}")
        teacher_config, base_cfg = read_run(d.teacher)
        teacher_task = task_name(teacher_config)
        if teacher_task != "classify":
            raise ValueError(
                f"distill.teacher={d.teacher} is a {teacher_task!r} run; classification distils a classify "
                "workdir (for a language model use configs/distill/shakespeare_char_cpu.py)"
            )
        student = ClassifyTask(config, workdir)
        check_teacher(d.teacher, teacher_config, base_cfg, student)
        return cls(config, student, teacher_config, base_cfg)

    # -- model
    def init(self, rng, *pretrained):
        """(student, {"teacher": frozen teacher}); without the teacher's weights (shapes only) a random one."""
        *student_base, teacher = pretrained or (None,)
        # The student takes `rng` itself: it starts as the same classify run from scratch (same seed) does.
        student, student_frozen = self.student.init(rng, *student_base)
        assert not student_frozen, "a full fine-tune freezes nothing"
        if teacher is None:  # the structure load_run gives: the teacher's PEFT method split and recombined
            teacher_rng, split_rng = jax.random.split(jax.random.fold_in(rng, 1))
            gpt = nn.meta.unbox(init_params(self.teacher_cfg, teacher_rng))
            gpt = self.teacher_method.combine(*self.teacher_method.split(gpt, split_rng))
            head = {
                "kernel": jnp.zeros((self.teacher_cfg.n_embd, self.student.num_labels), jnp.float32),
                "bias": jnp.zeros((self.student.num_labels,), jnp.float32),
            }
            teacher = {"backbone": gpt, "head": head}
        return student, {"teacher": teacher}

    def pretrained(self) -> tuple:
        _, _, gpt, _ = load_run(self.teacher_path)
        family = models.family_of(read_run(self.teacher_path)[0].model)
        head = load_state(self.teacher_path, self.teacher_cfg, family)["params"]["head"]
        teacher = jax.device_get({"backbone": dequantize_tree(gpt), "head": head})
        return (*self.student.pretrained(), teacher)

    def teacher_logits(self, teacher, batch):
        x_BxLxD = GPT(self.teacher_cfg).apply({"params": teacher["backbone"]}, batch["inputs"], features=True)
        pooled_BxD = pool(x_BxLxD, batch["lengths"], self.teacher_pooling)
        return pooled_BxD @ teacher["head"]["kernel"] + teacher["head"]["bias"]

    def loss(self):
        t, kw, hw = self.temperature, self.kl_weight, self.hard_weight

        def loss(params, frozen, batch, rng):
            s_logits_BxC = self.student.logits(params, {}, batch, rng)
            t_logits_BxC = jax.lax.stop_gradient(self.teacher_logits(frozen["teacher"], batch))
            return class_distill_loss(s_logits_BxC, t_logits_BxC, batch["labels"], t, kw, hw)

        return loss

    def metrics(self):
        plain = self.student.metrics()  # the student's own accuracy and cross entropy
        return lambda params, frozen, batch: plain(params, {}, batch)

    def wrap_optimizer(self, tx):
        return self.student.wrap_optimizer(tx)

    # -- data: the classify task's own, so a scratch student with the same seed sees the same rows
    def train_batches(self, step, k, process_index, process_count):
        return self.student.train_batches(step, k, process_index, process_count)

    def eval_batches(self, process_index, process_count):
        return self.student.eval_batches(process_index, process_count)

    def finish(self, trainer, state, workdir, best_state=None):
        # The student's report; without the teacher, so the trainable share counts the student alone.
        def student_only(s):
            return None if s is None else s.replace(frozen={})

        return self.student.finish(trainer, student_only(state), workdir, student_only(best_state))


def check_teacher(teacher: str, teacher_config, base_cfg, student: ClassifyTask) -> None:
    """One-line errors for a teacher the student cannot be distilled from: another vocabulary (size or ids),
    another label set, or rows longer than it reads."""
    vocab = student.tokenizer.vocab_size
    if base_cfg.vocab_size != vocab:
        raise ValueError(
            f"distill.teacher={teacher} has a vocabulary of {base_cfg.vocab_size} ids, the student's tokenizer "
            f"{vocab}; distill from a teacher trained with the student's data.tokenizer / data.vocab_size"
        )
    teacher_tok = load_tokenizer(teacher)
    rows = student.data["train"]
    for inputs_L, n in zip(rows["inputs"][:TOKENIZER_CHECK_ROWS], rows["lengths"][:TOKENIZER_CHECK_ROWS]):
        text = student.tokenizer.decode(inputs_L[:n])  # the same text through both tokenizers
        if list(teacher_tok.encode(text)) != list(student.tokenizer.encode(text)):
            raise ValueError(
                f"distill.teacher={teacher} has another vocabulary of {vocab} ids (its tokenizer encodes the "
                "training text differently); distill from a teacher trained with the student's tokenizer"
            )
    dataset = (teacher_config.get("task") or {}).get("dataset")
    labels_file = as_path(teacher) / "label_map.json"
    labels = list(json.loads(labels_file.read_text()).values()) if labels_file.is_file() else None
    if dataset != student.config.task.dataset or labels not in (None, list(student.label_names)):
        raise ValueError(
            f"distill.teacher={teacher} classifies {dataset} ({labels or 'labels as its dataset'}), the student "
            f"{student.config.task.dataset} {list(student.label_names)}; distill from a teacher on the same label set"
        )
    if student.max_len > base_cfg.block_size:
        raise ValueError(
            f"distill.teacher={teacher} reads {base_cfg.block_size} tokens, the student's rows {student.max_len}; "
            "lower --config.task.max_len"
        )
