"""Load a trained run from its workdir: `load_run(W) -> (config, model_config, params, tokenizer)`.

The one place sampling, chat, evaluation, export and fine-tuning get a model from: reads config.json,
model_config.json, tokenizer.json and a checkpoint, restored as the checkpoint's own metadata describes
it, so neither the optimizer nor the task (nor its dataset) is rebuilt. Fine-tuned runs come back as
plain model params: the PEFT method recombines its trainable tree with the frozen base.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections

from gpt_jax import peft
from gpt_jax import sharding as shd
from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
from gpt_jax.checkpoint_tree import saved_abstract
from gpt_jax.compression.stored import restore_params
from gpt_jax.data.tokenizers import load_tokenizer
from gpt_jax.models import registry as models
from gpt_jax.models import vlm
from gpt_jax.paths import as_path
from gpt_jax.peft.legacy import migrate_config
from gpt_jax.run_config import task_name
from gpt_jax.train import opt_state_shardings, param_shardings


def read_run_file(workdir, name: str) -> dict:
    """`<workdir>/<name>` parsed, or one clear error if the run never wrote it. config.json and
    model_config.json written by older code read as current ones (gpt_jax.peft.legacy)."""
    path = as_path(workdir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; --workdir must be a directory written by gpt_jax.main")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from a copy or retrain") from None
    return migrate_config(data) if name in ("config.json", "model_config.json") else data


def read_run(workdir) -> tuple[ml_collections.ConfigDict, Any]:
    """(config, model config) of the run in `workdir`, from its JSON files alone."""
    config = ml_collections.ConfigDict(read_run_file(workdir, "config.json"))
    return config, models.config_from_saved(read_run_file(workdir, "model_config.json"))


def load_state(workdir, model_cfg, family, *, step: int | None = None, mesh=None) -> dict:
    """The saved train state as a dict (params, frozen, opt_state, ...) on `mesh` (default: one device):
    model params sharded by the family's logical axes, the rest replicated."""
    workdir = as_path(workdir)
    if mesh is None:
        mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    with Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True) as ckpt:
        steps = ckpt.steps()
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {checkpoint_dir(workdir)}; train the run first")
        candidates = [step] if step is not None else list(reversed(steps))
        abstract = saved_abstract([ckpt.directory / str(s) for s in candidates])
        reference = family.abstract_params(model_cfg)
        sharding = {k: jax.tree.map(lambda _: shd.replicated(mesh), v) for k, v in abstract.items()}
        sharding["params"] = param_shardings(abstract["params"], reference, mesh)
        if "frozen" in abstract:
            sharding["frozen"] = param_shardings(abstract["frozen"], reference, mesh)
        if "opt_state" in abstract:
            sharding["opt_state"] = opt_state_shardings(
                abstract["opt_state"], abstract["params"], sharding["params"], shd.replicated(mesh)
            )
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, sharding)
        # Default: the newest checkpoint that verifies and reads (a corrupt one is named and skipped).
        return ckpt.restore(target, step)[0] if step is not None else ckpt.restore_latest_good(target)[0]


def load_run(workdir, *, step: int | None = None, mesh=None) -> tuple[ml_collections.ConfigDict, Any, Any, Any]:
    """(config, model_config, params, tokenizer) of the run in `workdir`, params from checkpoint `step`
    (default: the newest good one) placed on `mesh` (default: one device) per gpt_jax.sharding's rules."""
    return load_run_at(workdir, step=step, mesh=mesh)[:4]


def load_run_at(workdir, *, step: int | None = None, mesh=None) -> tuple[ml_collections.ConfigDict, Any, Any, Any, int]:
    """load_run, and the step of the checkpoint it restored (the newest good one unless `step`)."""
    workdir = as_path(workdir)
    config, model_cfg = read_run(workdir)
    finetuned = task_name(config) != "lm"
    if finetuned:  # the model runs with the PEFT method's modules (adapters, prefix), which are its own
        method = peft.make_method(config.peft, config.train.num_steps)
        model_cfg = method.model_config(model_cfg)
    tokenizer = load_tokenizer(workdir)
    family = models.family_of(config.model)
    state = load_state(workdir, model_cfg, family, step=step, mesh=mesh)
    params = state["params"]
    if finetuned and "backbone" in params:
        # a fine-tune: the PEFT method's trainable tree under "backbone", its frozen base apart
        params = method.combine(params["backbone"], state.get("frozen") or {})
    elif finetuned and family.name == "vlm":  # a vqa run: vit / projector / lm split by vqa.freeze and PEFT
        params = vlm.combine_params(method, params, state.get("frozen") or {})
    params = restore_params(workdir, params)  # a compressed run's int8/int4 weights: their in-memory form
    return config, model_cfg, params, tokenizer, int(state["step"])
