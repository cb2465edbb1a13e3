"""Hugging Face GPT-2 folders <-> gpt_jax workdirs (the CLI is gpt_jax.cli.hf).

  python -m gpt_jax.hf import --hf_dir=D --workdir=W [--tokenizer=PATH] [--seed=0]
  python -m gpt_jax.hf export --workdir=W --hf_dir=D

`import` turns a local HF GPT-2 folder (config.json + model.safetensors or pytorch_model.bin, plus
GPT-2's vocab.json + merges.txt or a tokenizer.json) of any size into a workdir that evaluation,
sampling and fine-tuning start from: config.json/model_config.json as gpt_jax.main writes them,
tokenizer.json, and a step-0 Orbax checkpoint. `export` writes a workdir's latest checkpoint as a
folder that `transformers.GPT2LMHeadModel.from_pretrained` loads. Nothing is downloaded.

The weight and config mapping itself is gpt_jax.interop.hf_gpt2 (re-exported here: `load_gpt2`,
`save_gpt2`, `HFError`, ...).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from gpt_jax import run_config
from gpt_jax import sharding as shd
from gpt_jax.base_config import base_config
from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
from gpt_jax.config import ModelConfig
from gpt_jax.data.tokenizers import BPETokenizer
from gpt_jax.interop.hf_files import HFError, read_hf_weights, read_json
from gpt_jax.interop.hf_gpt2 import (
    HF_DEFAULTS,
    TANH_GELUS,
    Params,
    check_exportable,
    hf_config_from,
    hf_to_params,
    load_gpt2,
    model_config_from_hf,
    params_to_hf,
    save_gpt2,
)
from gpt_jax.models import gpt
from gpt_jax.models.registry import build_model_config
from gpt_jax.optim import make_optimizer
from gpt_jax.paths import as_path
from gpt_jax.tasks.lm_state import state_shardings
from gpt_jax.train import TrainState
from gpt_jax.workdir import load_run_at, read_run_file

__all__ = [
    "HF_DEFAULTS",
    "TANH_GELUS",
    "HFError",
    "Params",
    "check_exportable",
    "export_workdir",
    "hf_config_from",
    "hf_to_params",
    "import_workdir",
    "load_gpt2",
    "model_config_from_hf",
    "params_to_hf",
    "read_hf_weights",
    "read_json",
    "run_config_for",
    "save_gpt2",
]


# --- workdirs ----------------------------------------------------------------------------------


def run_config_for(cfg: ModelConfig, seed: int = 0):
    """The base run config with `cfg` written into config.model (and the BPE tokenizer)."""
    config = base_config()
    config.seed = seed
    for field in dataclasses.fields(ModelConfig):
        if field.name in config.model:
            config.model[field.name] = getattr(cfg, field.name)
    config.data.tokenizer = "bpe"
    return config


def _host_mesh():
    """One host CPU device: converting weights needs no accelerator memory (any size fits in RAM)."""
    try:
        devices = jax.devices("cpu")[:1]
    except RuntimeError:  # JAX_PLATFORMS without cpu
        devices = jax.devices()[:1]
    return shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=devices)


def import_workdir(
    hf_dir: str | pathlib.Path,
    workdir: str | pathlib.Path,
    *,
    tokenizer_path: str | pathlib.Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """An HF GPT-2 folder -> a gpt_jax workdir (configs, tokenizer.json, step-0 checkpoint)."""
    hf_dir, workdir = pathlib.Path(hf_dir), as_path(workdir)
    if (workdir / "config.json").exists() or checkpoint_dir(workdir).exists():
        raise HFError(f"{workdir} already holds a run; pass a new --workdir")
    cfg, params = load_gpt2(hf_dir)
    tokenizer = BPETokenizer.from_pretrained(tokenizer_path or hf_dir)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise HFError(
            f"the tokenizer has {tokenizer.vocab_size} ids but {hf_dir / 'config.json'} has vocab_size="
            f"{cfg.vocab_size}; they belong to different models"
        )
    config = run_config_for(cfg, seed)
    model_cfg = build_model_config(config, tokenizer.vocab_size)
    assert model_cfg == cfg, (model_cfg, cfg)  # the workdir's config rebuilds exactly this model
    run_config.check_and_save(workdir, config, dataclasses.asdict(model_cfg))
    tokenizer.save(workdir)

    # The full TrainState that trainer.restore_or_init and gpt_jax.evaluate restore: fresh optimizer
    # state for config.optim, step 0, and the train rng create_train_state would derive from the seed.
    # Built on one host CPU device (no accelerator memory needed, and Orbax writes one copy fast);
    # restoring reshards it onto whatever mesh the run uses.
    mesh = _host_mesh()
    tx, _ = make_optimizer(config.optim, config.train.num_steps, gpt.matrix_dims)
    _, shardings = state_shardings(cfg, tx, mesh)
    params = jax.device_put(params, shardings.params)
    state = TrainState(
        step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
        params=params,
        opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(params),
        rng=jax.device_put(jax.random.split(jax.random.key(seed))[1], shardings.rng),
    )
    ckpt = Checkpointer(checkpoint_dir(workdir), save_every=0, keep=config.checkpoint.keep, async_save=False)
    try:
        ckpt.maybe_save(0, state, {"step": 0, "seed": seed, "imported_from": str(hf_dir.resolve())}, force=True)
    finally:
        ckpt.close()
    return {"workdir": str(workdir), "model": dataclasses.asdict(cfg), "tokenizer_vocab": tokenizer.vocab_size}


def export_workdir(workdir: str | pathlib.Path, hf_dir: str | pathlib.Path) -> dict[str, Any]:
    """A gpt_jax workdir's latest checkpoint -> an HF GPT-2 folder."""
    workdir = as_path(workdir)
    check_exportable(ModelConfig(**read_run_file(workdir, "model_config.json")))  # before the (slow) restore
    # the newest good checkpoint: a corrupt newer one is named and skipped
    _, cfg, params, tokenizer, step = load_run_at(workdir, mesh=_host_mesh())
    written = save_gpt2(cfg, params, hf_dir, tokenizer)
    result = {"hf_dir": str(hf_dir), "step": step, "files": written}
    if not hasattr(tokenizer, "save_pretrained"):
        result["note"] = f"the {tokenizer.name!r} tokenizer has no HF equivalent; only the model was exported"
    return result
