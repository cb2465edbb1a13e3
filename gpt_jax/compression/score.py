"""Validation metrics of a W8A8 run: its QuantizedTensor weights cannot take the trainer's param
shardings (a scale is not laid out like the kernel it scales), so they are scored unsharded, on the
same validation batches and with the same metric as gpt_jax.evaluate uses for every other run."""

from __future__ import annotations

import jax

from gpt_jax.compression import qtensor
from gpt_jax.train import make_eval


def has_w8a8(params) -> bool:
    is_q = lambda x: isinstance(x, qtensor.QuantizedTensor)
    return any(is_q(x) and x.act_bits for x in jax.tree.leaves(params, is_leaf=is_q))


def evaluate_unsharded(trainer, params) -> dict[str, float]:
    batches = trainer.task.eval_batches(0, 1)
    got = jax.jit(make_eval(trainer.task.metrics()))(params, {}, batches)
    return {k: float(v) for k, v in jax.device_get(got).items()}
