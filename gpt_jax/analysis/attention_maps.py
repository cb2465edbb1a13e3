"""Attention maps: every layer's and head's attention probabilities for a prompt, and heatmaps of them.

    weights_NxBxHxLxS = attention_weights(model_cfg, params, ids_BxL)
    plot_attention(weights_NxBxHxLxS[:, 0], tokens, "attn.png", layers=[0, 1], heads=[0])

    python -m gpt_jax.attention_maps --workdir=runs/shk_cpu --prompt="ROMEO:" --out=attn.png [--layers=0,1 --heads=0]

The weights are the ones the model sows when 'intermediates' is mutable (gpt_jax.attention): on the
einsum path, which is forced here because fused attention kernels never form the probabilities.
With prefix tuning the first `prefix_len` key columns are the prefix slots.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT
from gpt_jax.workdir import load_run

MAX_LABELLED = 48  # token labels on the axes only up to this many positions (unreadable beyond)


@functools.lru_cache(maxsize=8)
def _weights_fn(cfg: ModelConfig):
    model = GPT(cfg)

    def weights(params, ids_BxL):
        _, state = model.apply({"params": params}, ids_BxL, mutable=["intermediates"])
        inter = state["intermediates"]
        if cfg.scan_layers:  # nn.scan stacked the per-layer sows: (p_NxBxHxLxS,)
            (p_NxBxHxLxS,) = inter["h"]["block"]["attn"]["attention_weights"]
            return p_NxBxHxLxS.astype(jnp.float32)
        layers = [inter[f"h_{i}"]["attn"]["attention_weights"][0] for i in range(cfg.n_layer)]
        return jnp.stack(layers).astype(jnp.float32)

    return jax.jit(weights)


def attention_weights(model_cfg: ModelConfig, params, ids_BxL) -> np.ndarray:
    """float32 [n_layer, B, H, L, S]: row l of head h in layer n is query l's distribution over keys.

    S = L, or prefix_len + L with prefix tuning. `params` may be boxed (as init_params returns them).
    """
    ids_BxL = np.asarray(ids_BxL, np.int32)
    if ids_BxL.ndim != 2:
        raise ValueError(f"ids must be [batch, length], got shape {ids_BxL.shape}; wrap one prompt as [ids]")
    if ids_BxL.shape[1] > model_cfg.block_size and model_cfg.pos == "learned":
        raise ValueError(
            f"prompt of {ids_BxL.shape[1]} tokens exceeds model.block_size={model_cfg.block_size}; crop it"
        )
    cfg = model_cfg.replace(attention="einsum")
    return np.asarray(_weights_fn(cfg)(nn.meta.unbox(params), ids_BxL))


def token_label(text: str) -> str:
    """A printable axis label for one token: whitespace made visible, long pieces cut."""
    text = text.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u2423")
    return text if len(text) <= 12 else text[:11] + "\u2026"


def pick_indices(which: Sequence[int] | None, n: int, what: str) -> list[int]:
    """The chosen layer/head indices (all when None), each checked to be in 0..n-1."""
    picked = list(range(n)) if which is None else [int(i) for i in which]
    bad = [i for i in picked if not 0 <= i < n]
    if bad or not picked:
        raise ValueError(f"{what} {bad or picked} out of range: the model has {what} 0..{n - 1}")
    return picked


def plot_attention(
    weights_NxHxTxS,
    tokens: Sequence[str],
    path: str | pathlib.Path,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> pathlib.Path:
    """Heatmap grid of one sequence's attention (rows = layers, columns = heads) to a PNG.

    weights_NxHxTxS: [n_layer, H, T, S] (one batch row of attention_weights). tokens: the T query
    tokens as text; keys beyond them on the left (S > T) are prefix slots, labelled p0, p1, ...
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    w = np.asarray(weights_NxHxTxS, np.float32)
    if w.ndim != 4:
        raise ValueError(f"weights must be [layers, heads, T, S] (one batch row), got shape {w.shape}")
    n, h, t, s = w.shape
    if len(tokens) != t:
        raise ValueError(f"{len(tokens)} tokens for {t} query positions; pass one label per position")
    rows, cols = pick_indices(layers, n, "layers"), pick_indices(heads, h, "heads")
    query_labels = [token_label(x) for x in tokens]
    key_labels = [f"p{i}" for i in range(s - t)] + query_labels
    labelled = t <= MAX_LABELLED
    size = max(2.0, min(6.0, 0.16 * max(t, s) + 1.0))  # inches per map: room for the labels
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(size * len(cols), size * len(rows)), squeeze=False)
    for i, layer in enumerate(rows):
        for j, head in enumerate(cols):
            ax = axes[i][j]
            ax.imshow(w[layer, head], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            if labelled:
                font = max(4, 9 - max(t, s) // 8)
                ax.set_xticks(range(s), key_labels, rotation=90, fontsize=font)
                ax.set_yticks(range(t), query_labels, fontsize=font)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            if i == len(rows) - 1:
                ax.set_xlabel("key")
            if j == 0:
                ax.set_ylabel("query")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def prompt_maps(workdir, prompt: str, out, layers=None, heads=None) -> pathlib.Path:
    """Load the run in `workdir`, encode `prompt` (its last block_size tokens), plot its attention."""
    _, model_cfg, params, tokenizer = load_run(workdir)
    ids = np.asarray(tokenizer.encode(prompt), np.int32)[-model_cfg.block_size :]
    if ids.size == 0:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens; give a non-empty --prompt")
    weights = attention_weights(model_cfg, params, ids[None])
    tokens = [tokenizer.decode(ids[i : i + 1]) for i in range(ids.size)]
    return plot_attention(weights[:, 0], tokens, out, layers=layers, heads=heads)
