"""Tasks by `config.task.name`: one line per task; each builds itself with `from_config(config, workdir)`."""

from __future__ import annotations

import pathlib

import ml_collections

from gpt_jax.compression.prune_task import PruneTask
from gpt_jax.compression.qat import QATTask
from gpt_jax.paths import as_path
from gpt_jax.run_config import task_name
from gpt_jax.tasks.base import Task
from gpt_jax.tasks.classify import ClassifyTask
from gpt_jax.tasks.distill import DistillTask
from gpt_jax.tasks.distill_classify import DistillClassifyTask
from gpt_jax.tasks.gan import GANTask
from gpt_jax.tasks.image_classify import ImageClassifyTask
from gpt_jax.tasks.lm import LMTask
from gpt_jax.tasks.seqgan import SeqGANTask
from gpt_jax.tasks.sft import SFTTask
from gpt_jax.tasks.vqa import VQATask

TASKS: dict[str, type] = {
    "lm": LMTask,
    "classify": ClassifyTask,
    "sft": SFTTask,
    "gan": GANTask,
    "seqgan": SeqGANTask,
    "vqa": VQATask,
    "image_classify": ImageClassifyTask,
    "distill": DistillTask,
    "distill_classify": DistillClassifyTask,
    "prune": PruneTask,
    "qat": QATTask,
}


def make_task(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> Task:
    name = task_name(config)
    if name not in TASKS:
        raise ValueError(f"config.task.name={name!r} is not one of {sorted(TASKS)}")
    return TASKS[name].from_config(config, as_path(workdir))
