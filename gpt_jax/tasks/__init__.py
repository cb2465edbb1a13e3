"""Tasks: what a run trains (`config.task.name`). See gpt_jax.tasks.base.Task for the contract."""

from __future__ import annotations

import pathlib

import ml_collections

TASKS = ("lm", "classify", "sft")


def make_task(config: ml_collections.ConfigDict, workdir: pathlib.Path):
    name = (config.get("task") or {}).get("name", "lm")
    if name == "lm":
        return _lm_task(config, workdir)
    if name in ("classify", "sft"):
        from gpt_jax.tasks import finetune_tasks

        return finetune_tasks.make(name, config, workdir)
    raise ValueError(f"config.task.name={name!r} is not one of {TASKS}")


def _lm_task(config, workdir: pathlib.Path):
    from gpt_jax import data as data_lib
    from gpt_jax.tasks.lm import LMTask
    from gpt_jax.trainer import build_model_config

    if config.get("init_from"):
        raise ValueError("config.init_from is for fine-tuning tasks; pretraining starts from scratch (or resumes its workdir)")
    d = config.data
    tokenizer = data_lib.load_tokenizer(workdir) if (workdir / "tokenizer.json").exists() else None
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
    model_cfg = build_model_config(config, tokenizer.vocab_size + LMTask.extra_tokens(config))
    return LMTask(config, tokenizer, tokens, model_cfg)
