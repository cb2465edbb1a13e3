"""chex at the model's entry (gpt_jax.model.GPT.__call__): a 1-D prompt, float "ids" or positions of
another shape fail at trace time with chex's message instead of deep inside attention."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT

CFG = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11)


@pytest.fixture(scope="module")
def params():
    return GPT(CFG).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]


@pytest.mark.parametrize(
    "ids,kwargs,message",
    [
        (np.arange(5, dtype=np.int32), {}, "rank 1"),
        (np.zeros((2, 5), np.float32), {}, "float32"),
        (np.zeros((2, 5), np.int32), {"positions_BxL": np.zeros((2, 4), np.int32)}, "equal_shape"),
    ],
    ids=["1-D prompt", "float ids", "positions shape"],
)
def test_bad_entry_inputs_fail_at_the_entry(params, ids, kwargs, message):
    with pytest.raises(AssertionError, match=message):
        GPT(CFG).apply({"params": params}, ids, **kwargs)


def test_rows_are_independent(params):
    """A batch's logits are each row's own (chex.assert_trees_all_close over the two ways)."""
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int32)
    both = GPT(CFG).apply({"params": params}, ids)
    alone = jnp.concatenate([GPT(CFG).apply({"params": params}, ids[i : i + 1]) for i in range(2)])
    chex.assert_shape(both, (2, 4, CFG.vocab_size))
    chex.assert_trees_all_close(both, alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(AssertionError):  # and the check can fail: rows swapped
        chex.assert_trees_all_close(both, alone[::-1], atol=1e-5, rtol=1e-5)
