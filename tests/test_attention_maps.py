"""gpt_jax.analysis.attention_maps: the sown attention weights (shape, causality, a hand computation of layer 0,
scan vs unrolled, any cfg.attention), the heatmap grid and the CLI on a tiny trained run."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from gpt_jax.analysis.attention_maps import (
    attention_weights,
    plot_attention,
    token_label,
)
from gpt_jax.cli.attention_maps import main
from gpt_jax.config import ModelConfig
from gpt_jax.model import init_params
from gpt_jax.peft.prefix import PrefixTuning

TINY = ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
B, L = 2, 12
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def params():
    return nn.meta.unbox(init_params(TINY, jax.random.key(0)))


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, TINY.vocab_size, (B, L)).astype(np.int32)


@pytest.fixture(scope="module")
def weights(params, ids):
    return attention_weights(TINY, params, ids)


def test_shape_dtype_rows_sum_to_one_and_causal(weights):
    assert weights.shape == (TINY.n_layer, B, TINY.n_head, L, L)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    future = np.triu(np.ones((L, L), bool), k=1)
    assert np.all(weights[..., future] == 0.0)
    assert np.all(weights[..., 0, 0] == 1.0)  # the first query can only see itself


def test_layer0_matches_a_hand_computation(params, ids, weights):
    """softmax(q k^T / sqrt(K)) over ln_1(wte[ids] + wpe[pos]), causal: no model code involved."""
    p = jax.tree.map(np.asarray, params)
    x = p["wte"][ids] + p["wpe"][np.arange(L)]
    ln = p["h_0"]["ln_1"]
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    h = (x - mean) / np.sqrt(var + TINY.norm_eps) * ln["scale"] + ln["bias"]
    att = p["h_0"]["attn"]
    q = np.einsum("bld,dhk->bhlk", h, att["query"]["kernel"]) + att["query"]["bias"][:, None]
    k = np.einsum("bld,dhk->bhlk", h, att["key"]["kernel"]) + att["key"]["bias"][:, None]
    s = np.einsum("bhlk,bhsk->bhls", q, k) / np.sqrt(TINY.head_dim)
    s = np.where(np.tril(np.ones((L, L), bool)), s, -np.inf)
    expect = np.exp(s - s.max(-1, keepdims=True))
    expect /= expect.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights[0], expect, atol=1e-5)


def test_scan_layers_gives_the_same_maps(params, ids, weights):
    """Same weights stacked under h/block with a leading layer axis."""
    stacked = {k: v for k, v in params.items() if not k.startswith("h_")}
    layers = [params[f"h_{i}"] for i in range(TINY.n_layer)]
    stacked["h"] = {"block": jax.tree.map(lambda *xs: np.stack(xs), *layers)}
    got = attention_weights(TINY.replace(scan_layers=True), stacked, ids)
    np.testing.assert_allclose(got, weights, atol=1e-6)


def test_fused_attention_setting_is_overridden(params, ids, weights):
    got = attention_weights(TINY.replace(attention="dot_product"), params, ids)
    np.testing.assert_allclose(got, weights, atol=1e-6)


def test_boxed_params_and_bad_ids(ids, weights):
    boxed = init_params(TINY, jax.random.key(0))
    np.testing.assert_allclose(attention_weights(TINY, boxed, ids), weights, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        attention_weights(TINY, boxed, ids[0])
    with pytest.raises(ValueError, match="block_size"):
        attention_weights(TINY, boxed, np.zeros((1, TINY.block_size + 1), np.int32))


def test_prefix_slots_come_first(ids, tmp_path):
    """With prefix tuning every query also sees the prefix_len slots: S = P + L, first columns."""
    cfg = PrefixTuning(length=2).model_config(TINY.replace(n_layer=1))
    w = attention_weights(cfg, init_params(cfg, jax.random.key(1)), ids)
    assert w.shape == (1, B, TINY.n_head, L, L + 2)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.all(w[..., :2] > 0) and np.all(w[..., 2:][..., np.triu(np.ones((L, L), bool), k=1)] == 0)
    tokens = [str(i) for i in range(L)]
    assert plot_attention(w[:, 0], tokens, tmp_path / "prefix.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_grid_subsets_and_errors(tmp_path, weights):
    tokens = [chr(ord("a") + i) for i in range(L - 1)] + ["\n"]
    out = plot_attention(weights[:, 0], tokens, tmp_path / "all.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    few = plot_attention(weights[:, 1], tokens, tmp_path / "sub" / "few.png", layers=[1], heads=[0])
    assert few.read_bytes()[:8] == PNG_MAGIC
    assert few.stat().st_size < out.stat().st_size  # one map, not four
    with pytest.raises(ValueError, match="layers .* out of range"):
        plot_attention(weights[:, 0], tokens, tmp_path / "x.png", layers=[TINY.n_layer])
    with pytest.raises(ValueError, match="one label per position"):
        plot_attention(weights[:, 0], tokens[:-1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="one batch row"):
        plot_attention(weights, tokens, tmp_path / "x.png")
    assert token_label(" \n") == "\u2423\\n"


def test_cli_on_a_trained_run(tmp_path, tiny_run, capsys):
    """The suite's shared tiny run (conftest): no extra training when the whole suite runs."""
    _, workdir, _ = tiny_run
    out = tmp_path / "attn.png"
    assert main([f"--workdir={workdir}", "--prompt=ROMEO:", f"--out={out}", "--layers=0,1", "--heads=1"]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in capsys.readouterr().out
    assert main([f"--workdir={workdir}", "--prompt=ROMEO:", f"--out={out}", "--heads=7"]) == 2
    assert "heads [7] out of range" in capsys.readouterr().err
    assert main([f"--workdir={tmp_path / 'nothing'}", "--prompt=x", f"--out={out}"]) == 2
    assert "not found" in capsys.readouterr().err
