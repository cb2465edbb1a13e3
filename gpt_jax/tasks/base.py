"""What the trainer trains. One `Task` per kind of run; the trainer, step and checkpoints are shared.

A task owns its data (step-addressed host batches), its model (the GPT config it runs), its loss and
eval metrics, how its state is initialised (random, or from a pretrained base) and its end-of-run work
(a sample, a classification report, the adapter file).
"""

from __future__ import annotations

import pathlib
from typing import Any, Protocol

import numpy as np
import optax

from gpt_jax.config import ModelConfig
from gpt_jax.train import MetricsFn, TaskLossFn


class Task(Protocol):
    name: str
    model_cfg: ModelConfig  # the GPT the task runs (its architecture is what the workdir guard checks)
    tokenizer: Any  # None for a task without text (an image GAN): nothing is saved for it
    seq_len: int  # tokens per example row: what tokens/s and MFU count (1 for an image: images/s)
    lm_head: bool  # whether the step projects every position onto the vocabulary (for FLOPs)

    def init(self, rng, *pretrained) -> tuple[Any, Any]:
        """(trainable, frozen), jittable; `pretrained` = the arrays of `self.pretrained()` (if any)."""

    def pretrained(self) -> tuple:
        """Arrays `init` grafts in (a base model's params), or () to start from scratch."""

    def loss(self) -> TaskLossFn: ...

    def metrics(self) -> MetricsFn: ...

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation: ...

    # Optional, for several sub-models (a generator and a discriminator, a student beside a frozen
    # teacher): `updates(tx, schedule) -> list[gpt_jax.train.Update]`, each naming the sub-model of the
    # trainable dict it moves, with its own loss and optimizer, applied in order within a step. Without
    # it the trainer runs one update: `loss()` on the whole trainable tree with `wrap_optimizer(tx)`.
    # Optional too: `on_eval(trainer, state, step)`, host work after each evaluation (a GAN's sample grids).

    def train_batches(self, step: int, k: int, process_index: int, process_count: int) -> dict[str, np.ndarray]:
        """Host batches of steps [step, step + k): every array [k, B_local, ...], a pure function of the step."""

    def eval_batches(self, process_index: int, process_count: int) -> dict[str, np.ndarray]:
        """The fixed validation batches [N, B_local, ...]."""

    def finish(self, trainer, state, workdir: pathlib.Path, best_state=None) -> dict[str, Any]:
        """End-of-run work (samples, reports, adapter files); returns extra summary entries."""


class OnLMBatches:
    """Mixin for tasks that train on an inner LM task's batches (`self.lm`) with the optimizer unchanged:
    QAT, distillation, a pruning fine-tune (which overrides `wrap_optimizer`)."""

    lm: Any

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        return tx

    def train_batches(self, step: int, k: int, process_index: int, process_count: int) -> dict[str, np.ndarray]:
        return self.lm.train_batches(step, k, process_index, process_count)

    def eval_batches(self, process_index: int, process_count: int) -> dict[str, np.ndarray]:
        return self.lm.eval_batches(process_index, process_count)
