"""The GPT family: decoder-only Transformer (gpt_jax.model), GPT-2 exact by default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optax.contrib import MuonDimensionNumbers

from gpt_jax import flops
from gpt_jax.config import FIELDS, ModelConfig, model_config_from
from gpt_jax.model import GPT, init_params
from gpt_jax.models.base import ModelFamily
from gpt_jax.optim import map_with_path


def config_from(model_section: Mapping[str, Any], vocab_size: int) -> ModelConfig:
    """`config.model` with `vocab_size` = what the data needs (tokenizer + objective ids) unless set."""
    cfg = model_config_from(model_section, vocab_size=model_section.get("vocab_size") or vocab_size)
    if cfg.vocab_size < vocab_size:
        raise ValueError(
            f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's {vocab_size}; "
            "raise it or leave it unset"
        )
    return cfg


def config_from_saved(fields: dict) -> ModelConfig:
    return ModelConfig(**{k: v for k, v in fields.items() if k in FIELDS})


def matrix_dims(params):
    """Each hidden kernel as a (fan_in, fan_out) matrix; None for embeddings, the head, norms, biases.

    q/k/v kernels are [D, H, K] (in: D), the attention out_kernel [H, K, D] (in: H*K), MLP kernels 2-D.
    Embeddings and the untied head stay on Adam under Muon, as in modded-nanogpt.
    """

    def dims(path, leaf):
        name = path[-1]
        if name in ("wte", "wpe", "lm_head") or not name.endswith("kernel"):
            return None
        stacked = 1 if leaf.ndim >= 3 and "h" in path else 0  # scan_layers: leading layer axis
        nd = leaf.ndim - stacked
        if nd == 2:
            return MuonDimensionNumbers(reduction_axis=stacked, output_axis=stacked + 1)
        if name == "out_kernel":
            return MuonDimensionNumbers(reduction_axis=(stacked, stacked + 1), output_axis=stacked + 2)
        return MuonDimensionNumbers(reduction_axis=stacked, output_axis=(stacked + 1, stacked + 2))

    return map_with_path(dims, params)


FAMILY = ModelFamily(
    name="gpt",
    config_from=config_from,
    config_from_saved=config_from_saved,
    module=GPT,
    init=init_params,
    matrix_dims=matrix_dims,
    flops_per_token=flops.matmul_flops_per_token,
    kv_cache=True,
)
