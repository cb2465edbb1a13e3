"""Fine-tuning tasks by name (imported lazily: pretraining never loads them)."""

from __future__ import annotations


def make(name: str, config, workdir):
    if name == "classify":
        from gpt_jax.tasks.classify import ClassifyTask

        return ClassifyTask(config, workdir)
    from gpt_jax.tasks.sft import SFTTask

    return SFTTask(config, workdir)
