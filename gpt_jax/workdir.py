"""Load a trained run from its workdir: `load_run(W) -> (config, model_config, params, tokenizer)`.

The one place sampling, chat and fine-tuning get a model from: reads config.json, model_config.json,
tokenizer.json and the latest complete checkpoint (no dataset needed).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections

from gpt_jax import sharding as shd
from gpt_jax.config import ModelConfig


def read_run_file(workdir, name: str) -> dict:
    """`<workdir>/<name>` parsed, or one clear error if the run never wrote it."""
    path = pathlib.Path(workdir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; --workdir must be a directory written by gpt_jax.main")
    return json.loads(path.read_text())


def load_run(workdir, *, step: int | None = None, mesh=None) -> tuple[ml_collections.ConfigDict, ModelConfig, Any, Any]:
    """(config, model_config, params, tokenizer) of the run in `workdir`, params from checkpoint `step`
    (default: the latest) placed on `mesh` (default: one device) per gpt_jax.sharding's rules."""
    from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, restore_target
    from gpt_jax.data import load_tokenizer
    from gpt_jax.optim import make_optimizer
    from gpt_jax.train import state_shardings

    workdir = pathlib.Path(workdir)
    config = ml_collections.ConfigDict(read_run_file(workdir, "config.json"))
    if (config.get("task") or {}).get("name", "lm") != "lm":
        return _load_finetuned(workdir, config, step)
    model_config = ModelConfig(**read_run_file(workdir, "model_config.json"))
    tokenizer = load_tokenizer(workdir)
    ckpt = Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {checkpoint_dir(workdir)}; train the run first")
        if mesh is None:
            mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
        # The checkpoint holds the whole TrainState: restore it as saved, keep the params.
        tx, _ = make_optimizer(config.optim, config.train.num_steps)
        abstract, shardings = state_shardings(model_config, tx, mesh)
        state, _ = ckpt.restore(restore_target(abstract, shardings), step)
    finally:
        ckpt.close()
    return config, model_config, state.params, tokenizer


def _load_finetuned(workdir: pathlib.Path, config, step):
    """A fine-tuned run: its task rebuilds the (PEFT) model; the trainable and frozen trees are combined
    into plain GPT params (LoRA merged, adapters/prefix included) for sampling, chat and evaluation."""
    from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, restore_target
    from gpt_jax.trainer import Trainer

    tr = Trainer(config, workdir, write=False)
    with Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True) as ckpt:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {checkpoint_dir(workdir)}; train the run first")
        state, _ = ckpt.restore(restore_target(tr.abstract, tr.shardings), step)
    params = tr.task.backbone.gpt_params(state.params["backbone"], state.frozen)
    return config, tr.model_cfg, params, tr.tokenizer
