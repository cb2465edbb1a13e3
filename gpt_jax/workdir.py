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


def load_run(workdir, *, step: int | None = None, mesh=None) -> tuple[ml_collections.ConfigDict, ModelConfig, Any, Any]:
    """(config, model_config, params, tokenizer) of the run in `workdir`, params from checkpoint `step`
    (default: the latest) placed on `mesh` (default: one device) per gpt_jax.sharding's rules."""
    from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
    from gpt_jax.data import load_tokenizer
    from gpt_jax.optim import make_optimizer
    from gpt_jax.train import state_shardings

    workdir = pathlib.Path(workdir)
    for name in ("config.json", "model_config.json"):
        if not (workdir / name).is_file():
            raise FileNotFoundError(
                f"{workdir / name} not found; --workdir must be a directory written by gpt_jax.main"
            )
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    model_config = ModelConfig(**json.loads((workdir / "model_config.json").read_text()))
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
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        state, _ = ckpt.restore(target, step)
    finally:
        ckpt.close()
    return config, model_config, state.params, tokenizer
