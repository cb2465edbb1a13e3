"""Where a multimodal run looks when it answers: attention from the answer to the image patches, as heatmaps.

    maps = image_attention(run, "what digit is this?", images_NxHxWxC)   # run: gpt_jax.vlm_run.VLMRun
    plot_image_attention(maps, "attention.png")

    python -m gpt_jax.attention_maps --workdir=W --image=digit.png --prompt="what digit is this?" --out=attn.png

The answer is generated greedily; then the whole sequence (prompt with its images, answer) runs once
through the VLM with the prefix-LM mask, sowing every LM layer's attention (gpt_jax.attention). The answer
queries are the positions that produce the answer: the prompt's last token (it yields the first answer
token) and every answer token (the last one yields <eos>). A patch's weight is the attention those
queries give its image token, averaged over the queries and the chosen layers and heads, so the weights
of image i sum to the answer's mean attention mass on image i (the rest goes to the text).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax import vlm_run
from gpt_jax.analysis.attention_maps import pick_indices
from gpt_jax.data import image_io
from gpt_jax.models.vlm import VisionLanguageModel, VLMConfig


@dataclasses.dataclass
class ImageAttention:
    question: str
    answer: str
    images: np.ndarray  # float32 [N, H, W, C]: what the model saw
    patches: np.ndarray  # float32 [N, g, g]: each image token's weight, on its place in the image (module doc)
    mass: np.ndarray  # float32 [N]: the answer's mean attention mass on each image (= patches[i].sum())
    weights: np.ndarray  # float32 [n_layer, H, L, L]: every LM attention map of the sequence
    queries: np.ndarray  # int [Q]: the answer query positions
    image_keys: np.ndarray  # int [N, P]: the key positions of each image's tokens, patch order


@functools.lru_cache(maxsize=8)
def _weights_fn(cfg: VLMConfig):
    model = VisionLanguageModel(cfg)

    def weights(params, ids_1xL, images_1xNxHxWxC, prefix_len_1):
        _, state = model.apply({"params": params}, ids_1xL, images_1xNxHxWxC, prefix_len_1, mutable=["intermediates"])
        inter = state["intermediates"]["lm"]
        if cfg.lm.scan_layers:  # nn.scan stacked the per-layer sows: (p_NxBxHxLxS,)
            (p_NxBxHxLxS,) = inter["h"]["block"]["attn"]["attention_weights"]
        else:
            p_NxBxHxLxS = jnp.stack([inter[f"h_{i}"]["attn"]["attention_weights"][0] for i in range(cfg.lm.n_layer)])
        return p_NxBxHxLxS[:, 0].astype(jnp.float32)

    return jax.jit(weights)


def lm_attention(cfg: VLMConfig, params, ids_1xL, images_1xNxHxWxC, prefix_len: int) -> np.ndarray:
    """float32 [n_layer, H, L, L]: the LM's attention maps over one multimodal sequence (einsum path)."""
    cfg = dataclasses.replace(cfg, lm=cfg.lm.replace(attention="einsum"))
    fn = _weights_fn(cfg)
    return np.asarray(fn(params, ids_1xL, images_1xNxHxWxC, np.asarray([prefix_len], np.int32)))


def image_attention(run, question: str, images_NxHxWxC: np.ndarray, layers=None, heads=None) -> ImageAttention:
    """Answer `question` about the images (greedy), then measure the answer's attention on their patches.

    run: a gpt_jax.vlm_run.VLMRun; images: preprocessed, float32 [N, H, W, C], one per placeholder.
    """
    cfg = run.model_cfg
    n_images = len(images_NxHxWxC)
    if n_images < 1:
        raise ValueError("no image given; the heatmap shows the answer's attention on image patches")
    layers = pick_indices(layers, cfg.lm.n_layer, "layers")
    heads = pick_indices(heads, cfg.lm.n_head, "heads")
    prompt = run.prompt_ids(question, n_images)
    lm = cfg.lm
    options = run.options()
    room = lm.block_size - len(prompt) if lm.pos != "rope" else options.max_new_tokens
    if room < 1:
        raise ValueError(f"the prompt with its images is {len(prompt)} tokens, filling block_size={lm.block_size}")
    new = run.generate([question], [images_NxHxWxC], options.replace(max_new_tokens=min(options.max_new_tokens, room)))[
        0
    ]
    answer_ids = []
    for t in new.tolist():
        if t < 0 or t == getattr(run.tokenizer, "eos_id", None):
            break
        answer_ids.append(t)
    ids = np.concatenate([prompt, np.asarray(answer_ids, np.int32)])[None]
    images_1xNxHxWxC = np.zeros((1, cfg.max_images, *images_NxHxWxC.shape[1:]), np.float32)
    images_1xNxHxWxC[0, :n_images] = images_NxHxWxC
    weights = lm_attention(cfg, nn.meta.unbox(run.params), ids, images_1xNxHxWxC, len(prompt))
    queries = np.arange(len(prompt) - 1, ids.shape[1])
    image_keys = np.flatnonzero(prompt == cfg.image_token_id).reshape(n_images, cfg.num_image_tokens)
    per_key = weights[np.ix_(layers, heads)][:, :, queries].mean(axis=(0, 1, 2))  # [L]: averaged over all three
    g = round(cfg.num_image_tokens**0.5)  # the LM's token grid per image (the ViT's, or coarser if merged)
    patches = per_key[image_keys].reshape(n_images, g, g)
    return ImageAttention(
        question=question,
        answer=run.text(new),
        images=np.asarray(images_NxHxWxC, np.float32),
        patches=patches.astype(np.float32),
        mass=patches.sum(axis=(1, 2)).astype(np.float32),
        weights=weights,
        queries=queries,
        image_keys=image_keys,
    )


def plot_image_attention(maps: ImageAttention, path: str | pathlib.Path) -> pathlib.Path:
    """Each image with its patch weights laid over it (one panel per image), titled with the answer, as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    n = len(maps.images)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    top = float(maps.patches.max()) or 1.0  # one colour scale for all images: their weights compare
    for i, ax in enumerate(axes[0]):
        img = maps.images[i]
        h, w = img.shape[:2]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0.0, vmax=1.0, extent=(0, w, h, 0))
        shown = ax.imshow(
            maps.patches[i],
            cmap="inferno",
            alpha=0.55,
            vmin=0.0,
            vmax=top,
            extent=(0, w, h, 0),
            interpolation="nearest",
        )
        ax.set_title(f"image {i + 1}: {100 * maps.mass[i]:.1f}% of the answer's attention", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{maps.question!r} -> {maps.answer!r}", fontsize=9)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_maps(workdir, prompt: str, image_paths: Sequence, out, layers=None, heads=None) -> ImageAttention:
    """Load the multimodal run in `workdir`, answer `prompt` about the image files, write the heatmap PNG."""
    vlm_run.require_multimodal(workdir)
    image_io.place_images(prompt, len(image_paths))  # before any file is read or the checkpoint restored
    run = vlm_run.load_vlm_run(workdir)
    maps = image_attention(run, prompt, run.load_images(image_paths), layers, heads)
    plot_image_attention(maps, out)
    return maps
