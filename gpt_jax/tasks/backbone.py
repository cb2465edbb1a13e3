"""The GPT a fine-tuning task trains: a pretrained base (`init_from`) or scratch, under a PEFT method."""

from __future__ import annotations

import json
import pathlib
import zlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from gpt_jax import peft
from gpt_jax.config import ModelConfig
from gpt_jax.data.tokenizers import BPETokenizer, load_tokenizer
from gpt_jax.interop import hf_gpt2
from gpt_jax.model import init_params
from gpt_jax.models.registry import build_model_config
from gpt_jax.optim import tree_bytes
from gpt_jax.paths import as_path
from gpt_jax.peft import io as adapter_io
from gpt_jax.peft.base import graft
from gpt_jax.peft.legacy import migrate_config
from gpt_jax.workdir import load_run


def load_base(init_from: str) -> tuple[ModelConfig, Callable[[], Any], Any]:
    """(model config, params loader, tokenizer) of a gpt_jax workdir or a Hugging Face GPT-2 folder.

    Params load lazily: a resumed fine-tune restores its own checkpoint and never needs them.
    """
    path = as_path(init_from)  # a gs:// workdir stays one (an HF folder must be local)
    if (path / "model_config.json").is_file():  # a gpt_jax workdir
        cfg = ModelConfig(**migrate_config(json.loads((path / "model_config.json").read_text())))
        return cfg, lambda: jax.device_get(load_run(path)[2]), load_tokenizer(path)
    if (path / "config.json").is_file():  # a Hugging Face GPT-2 folder
        cfg = hf_gpt2.model_config_from_hf(hf_gpt2.read_json(path / "config.json"), str(path / "config.json"))
        return cfg, lambda: jax.device_get(hf_gpt2.load_gpt2(path)[1]), BPETokenizer.from_pretrained(path)
    raise FileNotFoundError(
        f"init_from={init_from!r} is neither a gpt_jax workdir (model_config.json) nor a Hugging Face "
        "GPT-2 folder (config.json); pass --init_from=<workdir or HF dir>"
    )


class Backbone:
    """GPT params split by a PEFT method into (trainable, frozen); `gpt_params` recombines them."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, build_tokenizer: Callable[[], Any]):
        self.init_from = config.get("init_from")
        if self.init_from:
            base_cfg, self._load_params, tokenizer = load_base(self.init_from)
            base_cfg = base_cfg.replace(dropout=float(config.model.dropout))
        else:
            tokenizer = load_tokenizer(workdir) if (workdir / "tokenizer.json").exists() else build_tokenizer()
            base_cfg, self._load_params = build_model_config(config, tokenizer.vocab_size), None
        self.tokenizer, self.base_cfg = tokenizer, base_cfg  # the architecture (what model_config.json holds)
        self.method = peft.make_method(config.peft, config.train.num_steps)
        self.model_cfg = self.method.model_config(base_cfg)  # what GPT runs: the base plus the method's modules

    def pretrained(self) -> tuple:
        return (self._load_params(),) if self._load_params else ()

    def init(self, rng, base=None):
        """(trainable, frozen) backbone trees: the method's model, random, with `base` grafted in."""
        init_rng, split_rng = jax.random.split(rng)
        params = nn.meta.unbox(init_params(self.model_cfg, init_rng))
        if base is not None:
            params = graft(params, base)
        return self.method.split(params, split_rng)

    def gpt_params(self, trainable, frozen, rng=None):
        return self.method.combine(trainable, frozen, rng)

    def wrap_optimizer(self, tx, *others: str):
        """The method's optimizer wrapping (AdaLoRA's rank allocator) on the `backbone` subtree only; the
        other top-level subtrees named in `others` (e.g. "head") get `tx` as it is."""
        wrapped = self.method.wrap_optimizer(tx)
        return tx if wrapped is tx else per_key({"backbone": wrapped, **{name: tx for name in others}})

    def finish(self, state, use, workdir: pathlib.Path, peft_config) -> dict[str, Any]:
        """What every fine-tune reports: method, trainable share, optimizer-state bytes, AdaLoRA's rank
        allocation, and (process 0) the adapter file. `use` is the state the run reports (best or last)."""
        out = {"method": self.method.name, "opt_state_bytes": tree_bytes(state.opt_state)}
        out.update(peft.trainable_summary(use.params, use.frozen))
        if hasattr(self.method, "rank_allocation"):
            out["rank_allocation"] = self.method.rank_allocation(jax.device_get(use.params["backbone"]))
        if jax.process_index() == 0:
            out.update(save_adapter_file(self, use.params, workdir, peft_config))
        return out


def per_key(txs: dict[str, optax.GradientTransformation]) -> optax.GradientTransformation:
    """One optimizer per top-level key of a dict of params, each seeing only its own subtree (AdaLoRA's
    allocator reads its adapter tree as given; optax.multi_transform would hand it masked nodes)."""

    def init(params):
        return {k: tx.init(params[k]) for k, tx in txs.items()}

    def update(updates, state, params=None):
        out, new_state = {}, {}
        for k, tx in txs.items():
            out[k], new_state[k] = tx.update(updates[k], state[k], None if params is None else params[k])
        return out, new_state

    return optax.GradientTransformation(init, update)


def epoch_rows(num_rows: int, batch: int, seed: int, step: int, k: int, salt: str) -> np.ndarray:
    """Row indices [k, batch] for steps [step, step + k): each epoch is a fresh permutation of all rows,
    seeded by (seed, salt, epoch), so batches are a pure function of the step (resume-exact)."""
    g = (step * batch + np.arange(k * batch)).reshape(k, batch)
    epoch, pos = np.divmod(g, num_rows)
    out = np.empty_like(g)
    for e in np.unique(epoch):
        perm = np.random.default_rng([seed, zlib.crc32(salt.encode()), int(e)]).permutation(num_rows)
        out[epoch == e] = perm[pos[epoch == e]]
    return out


def epoch_batches(
    rows: dict[str, np.ndarray],
    batch: int,
    seed: int,
    step: int,
    k: int,
    salt: str,
    process_index: int,
    process_count: int,
) -> dict:
    """This process's rows of the global batches of steps [step, step + k): every field [k, B_local, ...]."""
    num_rows = len(next(iter(rows.values())))
    rows_KxB = epoch_rows(num_rows, batch, seed, step, k, salt)
    b_local = batch // process_count
    rows_KxB = rows_KxB[:, process_index * b_local : (process_index + 1) * b_local]
    return {key: v[rows_KxB] for key, v in rows.items()}


def padded_rows(arrays: dict[str, np.ndarray], batch: int, process_index: int, process_count: int, pad: dict) -> dict:
    """All rows as [N, B_local, ...] eval batches; the last batch padded with `pad` values per field."""
    n = len(next(iter(arrays.values())))
    total = -(-n // batch) * batch
    out = {}
    for k, v in arrays.items():
        filler = np.full((total - n, *v.shape[1:]), pad.get(k, 0), v.dtype)
        full = np.concatenate([v, filler]).reshape(total // batch, batch, *v.shape[1:])
        b_local = batch // process_count
        out[k] = full[:, process_index * b_local : (process_index + 1) * b_local]
    return out


def save_adapter_file(backbone: Backbone, trainable, workdir: pathlib.Path, peft_config) -> dict[str, Any]:
    """The trained adapter (+ task head) alone, for PEFT methods; nothing for full fine-tuning."""
    if backbone.method.name == "full":
        return {}
    base = jax.eval_shape(lambda: nn.meta.unbox(init_params(backbone.base_cfg, jax.random.key(0))))
    path = workdir / "adapter.safetensors"
    size = adapter_io.save_adapter(
        path, backbone.method.name, peft_config, jax.device_get(trainable), adapter_io.base_shapes(base)
    )
    return {"adapter_file": str(path), "adapter_bytes": int(size)}
