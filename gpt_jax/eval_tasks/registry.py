"""Eval tasks by name (`gpt_jax.evaluate --task=NAME`): one module per task, one line here."""

from __future__ import annotations

from gpt_jax.eval_tasks import hellaswag, wikitext
from gpt_jax.eval_tasks.base import EvalTask

TASKS: dict[str, EvalTask] = {t.name: t for t in (hellaswag.TASK, wikitext.TASK)}


def get(name: str) -> EvalTask:
    if name not in TASKS:
        raise ValueError(f"unknown --task={name!r}; known: val (validation loss), {', '.join(sorted(TASKS))}")
    return TASKS[name]
