"""Run the masked fine-tune of a pruned run (gpt_jax.compression.prune_task) in a scratch run directory."""

from __future__ import annotations

import pathlib

import ml_collections

from gpt_jax.models import registry as models
from gpt_jax.paths import as_path
from gpt_jax.trainer import train_and_evaluate
from gpt_jax.workdir import load_state, read_run_file


def finetune(source, scratch: pathlib.Path, config: ml_collections.ConfigDict):
    """Run the fine-tune in `scratch` (a fresh run dir); (its final params, its summary)."""
    scratch.mkdir(parents=True)
    tokenizer = as_path(source) / "tokenizer.json"
    if tokenizer.is_file():  # the source may be a gs:// run: copy the bytes, not the file
        (scratch / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    summary = train_and_evaluate(config, scratch)
    model_cfg = models.config_from_saved(read_run_file(scratch, "model_config.json"))
    state = load_state(scratch, model_cfg, models.family_of(config.model))
    return state["params"], summary
