"""Shared helpers for the PEFT tests: random (not init-distributed) params of a config, cheaply."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gpt_jax.config import ModelConfig
from gpt_jax.model import init_params


@functools.cache
def abstract(cfg: ModelConfig):
    return nn.meta.unbox(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))


def make_params(cfg: ModelConfig, seed: int = 0):
    """N(0, 0.2) values of every param of `cfg` (numpy draws: no jax.random compiles)."""
    r = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(abstract(cfg))
    return traverse_util.unflatten_dict(
        {k: jnp.asarray(0.2 * r.standard_normal(s.shape), jnp.float32) for k, s in flat.items()}
    )
