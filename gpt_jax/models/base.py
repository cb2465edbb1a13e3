"""What a model family gives the rest of the code: its typed config, module, init, matrix shapes, FLOPs.

The trainer, tasks, optimizers and sharding only talk to a family through this record, so a new family is
one module defining a `ModelFamily` plus one line in gpt_jax.models.registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    name: str
    # (config.model as a mapping, vocab size the data needs) -> the family's frozen config dataclass
    config_from: Callable[[Mapping[str, Any], int], Any]
    # the saved model_config.json fields -> the config dataclass (old fields a family dropped are ignored)
    config_from_saved: Callable[[dict], Any]
    module: Callable[[Any], nn.Module]  # config -> the Flax module; apply(params, ids_BxL, ...) -> logits
    # (config, rng) -> params as nn.LogicallyPartitioned boxes: the logical axes sharding is derived from
    init: Callable[[Any, Any], Any]
    # params -> same tree with optax.contrib.MuonDimensionNumbers for matrices (None for the rest): the
    # (fan_in, fan_out) view Muon orthogonalises and LoRA factorises
    matrix_dims: Callable[[Any], Any]
    # (config, sequence length, whether every position is projected on the vocabulary) -> forward FLOPs/token
    flops_per_token: Callable[[Any, int, bool], float]
    kv_cache: bool = False  # the module decodes with a KV cache (gpt_jax.generation); else windowed sampling

    def abstract_params(self, cfg):
        """The boxed params as shapes (nothing allocated): where every state sharding comes from."""
        return jax.eval_shape(lambda: self.init(cfg, jax.random.key(0)))
