"""Quantization-aware training: the LM task with every weight matrix fake-quantized in the forward pass
(symmetric absmax int8 / int4 per group, as `gpt_jax.compress quantize` will store it) and the gradient
passed straight through to the float weights (the straight-through estimator of Bengio et al. 2013).

Config (configs/qat/*.py): task.name = "qat" and a `quant` section {qat_bits: 8|4 (0: the same run without
fake quant, a control), group_size: 0 (per
channel) | 32 | 64 | 128, source: "" or a trained run to fine-tune from}. The run stores float weights;
`python -m gpt_jax.compress quantize --bits=B --group_size=G` of it gives the int model it trained for.
Eval during training scores the fake-quantized model (what the quantized run will score).
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gpt_jax.compression import qtensor
from gpt_jax.compression.matrices import flat, matrices, unflat
from gpt_jax.compression.stored import quant_record
from gpt_jax.tasks.base import OnLMBatches
from gpt_jax.tasks.lm import LMTask
from gpt_jax.workdir import load_run


def fake_quant(w_IxO, bits: int, group: int):
    """w quantized to the absmax grid per group of `group` inputs and dequantized (float32) in the forward
    pass; d(out)/d(w) = identity (straight-through: the rounding's zero gradient is skipped)."""
    i, o = w_IxO.shape
    w_GxNxO = w_IxO.astype(jnp.float32).reshape(i // group, group, o)
    scale_Gx1xO = jnp.max(jnp.abs(w_GxNxO), axis=1, keepdims=True) / qtensor.qmax(bits)
    scale_Gx1xO = jnp.where(scale_Gx1xO == 0, 1.0, scale_Gx1xO)
    q = jnp.clip(jnp.round(w_GxNxO / scale_Gx1xO), -qtensor.qmax(bits), qtensor.qmax(bits))
    dq_GxNxO = jax.lax.stop_gradient(q * scale_Gx1xO - w_GxNxO) + w_GxNxO
    return dq_GxNxO.reshape(i, o)


def check(params, bits: int, group_size: int) -> None:
    """One-line errors (before training) for bits or a group size that does not fit every matrix."""
    for m in matrices(params):
        qtensor.check_grouping(bits, group_size, m.rows, m.key)


def fake_quant_params(params, bits: int, group_size: int):
    """`params` with every matrix that `compress quantize` quantizes replaced by its fake-quantized self."""
    leaves = flat(params)
    for m in matrices(params):
        w = leaves[m.path]
        w_IxO = w.T if m.transposed else w.reshape(m.rows, -1)
        dq = fake_quant(w_IxO, bits, qtensor.check_grouping(bits, group_size, m.rows, m.key))
        leaves[m.path] = (dq.T if m.transposed else dq.reshape(w.shape)).astype(w.dtype)
    return unflat(leaves)


class QATTask(OnLMBatches):
    name = "qat"

    def __init__(self, lm: LMTask, bits: int, group_size: int, source: str = ""):
        self.lm, self.bits, self.group_size, self.source = lm, bits, group_size, source
        self.config, self.tokenizer, self.model_cfg = lm.config, lm.tokenizer, lm.model_cfg
        self.family, self.seq_len, self.lm_head = lm.family, lm.seq_len, lm.lm_head

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, workdir: pathlib.Path) -> QATTask:
        q = config.get("quant") or {}
        bits, group_size, source = int(q.get("qat_bits", 0)), int(q.get("group_size", 0)), q.get("source", "")
        if bits not in (0,) + qtensor.BITS:
            raise ValueError(f"config.quant.qat_bits={bits} is not supported; use 8 or 4 (0: no fake quant)")
        if source and quant_record(source) is not None:
            raise ValueError(f"config.quant.source={source} is a quantized run; fine-tune from the float run")
        lm_config = ml_collections.ConfigDict(config.to_dict())
        lm_config.task.name = "lm"
        task = cls(LMTask.from_config(lm_config, workdir), bits, group_size, source)
        if bits:
            check(nn.meta.unbox(jax.eval_shape(lambda: task.lm.init(jax.random.key(0))[0])), bits, group_size)
        return task

    def init(self, rng, params=None):
        return (params, {}) if params is not None else self.lm.init(rng)

    def pretrained(self) -> tuple:
        return (jax.device_get(load_run(self.source)[2]),) if self.source else self.lm.pretrained()

    def loss(self):
        inner, bits, group = self.lm.loss(), self.bits, self.group_size
        if not bits:  # the control: the same fine-tune without fake quant
            return inner
        return lambda params, frozen, batch, rng: inner(fake_quant_params(params, bits, group), frozen, batch, rng)

    def metrics(self):
        inner, bits, group = self.lm.metrics(), self.bits, self.group_size
        if not bits:
            return inner
        return lambda params, frozen, batch: inner(fake_quant_params(params, bits, group), frozen, batch)

    def finish(self, trainer, state, workdir, best_state=None):
        return {}
