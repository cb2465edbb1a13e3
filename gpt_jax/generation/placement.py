"""Where generation runs: the default device, or a mesh (e.g. the training one)."""

from __future__ import annotations

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt_jax import sharding as shd
from gpt_jax.config import ModelConfig
from gpt_jax.model import init_params


@functools.cache
def _param_shardings(cfg: ModelConfig, mesh):
    return shd.logical_sharding(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))), mesh)


class Placement:
    """No mesh: default device. A mesh: params per gpt_jax.sharding rules, the batch over
    (data, fsdp) when it divides, and the rules in scope while tracing."""

    def __init__(self, cfg: ModelConfig, mesh):
        self.cfg, self.mesh = cfg, mesh

    def scope(self):
        stack = contextlib.ExitStack()
        if self.mesh is not None:
            stack.enter_context(jax.set_mesh(self.mesh))
            stack.enter_context(nn.logical_axis_rules(shd.DEFAULT_RULES))
        return stack

    def params(self, params):  # outside scope(): tracing init_params there would hit the rules
        if self.mesh is None:
            return params
        return jax.device_put(params, _param_shardings(self.cfg, self.mesh))

    def batch(self, *arrays):
        if self.mesh is None:
            return tuple(jnp.asarray(a) for a in arrays)
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        out = []
        for a in arrays:
            s = shd.batch_sharding(self.mesh, a.ndim) if a.shape[0] % shards == 0 else shd.replicated(self.mesh)
            out.append(jax.device_put(a, s))
        return tuple(out)

    def replicated(self, tree):
        return tree if self.mesh is None else shd.put_replicated(tree, self.mesh)  # multi-process safe
