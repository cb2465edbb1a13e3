"""Generation for the "vlm" family (gpt_jax.models.vlm): images + prompt in, answer ids out, with a KV cache.

One compiled program per (batch, prompt bucket, image count, max_new_tokens, strategy):
1. prefill: the VLM's `embed` (every row's images through the encoder and projector, in one call, placed
   at the placeholder runs) feeds the LM with the prefix-LM mask: the whole prompt (images and text) is the
   prefix, so it attends both ways, as in training, and fills the KV cache once;
2. decode: the text engine's own loop (gpt_jax.generation.decode) on the LM alone. Answer tokens are text:
   they see every cached prompt slot and each other causally, which is the prefix-LM mask's suffix part.
Prompts are left-padded to a bucket like text prompts (gpt_jax.generation.prompts); options are the same
GenerateOptions (greedy, temperature, top-k/p, min-p, penalties, stop and banned ids; no beams or stop
strings: the answers are a few tokens long, cut them on the host). The image token is never produced.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.generation import decode as dec
from gpt_jax.generation.options import GenerateOptions, check_options
from gpt_jax.generation.processors import Knobs, Mode, knobs_of, mode_of
from gpt_jax.generation.prompts import check_length, pack, prompt_rows
from gpt_jax.kv_cache import init_cache
from gpt_jax.model import GPT
from gpt_jax.models.vlm import VisionLanguageModel, VLMConfig


def prefix_prefill_mask(start_B, length: int):
    """[B, P, P]: every real prompt slot sees every real prompt slot (the prompt is all prefix); a pad
    query sees the real slots and itself, which keeps its k/v finite."""
    s_1x1xP = jnp.arange(length)[None, None]
    real_BxPxP = jnp.broadcast_to(s_1x1xP >= start_B[:, None, None], (start_B.shape[0], length, length))
    return real_BxPxP | (jnp.arange(length)[:, None] == jnp.arange(length)[None])[None]


def encode_prompt(cfg: VLMConfig, params, prompt_BxP, images_BxNxHxWxC, start_B, cache_len: int):
    """The prompts (with their images) run into a fresh LM cache: (last-position logits [B, V], cache)."""
    b, p = prompt_BxP.shape
    x_BxPxD = VisionLanguageModel(cfg).apply({"params": params}, prompt_BxP, images_BxNxHxWxC, method="embed")
    positions_BxP = jnp.maximum(jnp.arange(p)[None] - start_B[:, None], 0)
    logits_Bx1xV, cache = GPT(cfg.lm).apply(
        {"params": params["lm"]},
        prompt_BxP,
        positions_BxP,
        prefix_prefill_mask(start_B, p),
        cache=init_cache(cfg.lm, b, cache_len),
        last_only=True,
        embeds_BxLxD=x_BxPxD,
    )
    return logits_Bx1xV[:, 0], cache


def generate_tokens(
    cfg: VLMConfig, mode: Mode, cache_len: int, max_new: int, params, prompt_BxP, images, start_B, knobs: Knobs, key
):
    """Prefill + the whole decode as one program: new tokens [B, max_new]."""
    logits_BxV, cache = encode_prompt(cfg, params, prompt_BxP, images, start_B, cache_len)
    state, first_Bx1 = dec.first_token(cfg.lm, mode, logits_BxV, cache, prompt_BxP, start_B, knobs, key)
    if max_new == 1:
        return first_Bx1
    _, rest_BxN, _ = dec.decode(cfg.lm, mode, max_new - 1, max_new, params["lm"], state, knobs)
    return jnp.concatenate([first_Bx1, rest_BxN], axis=1)


generate_jit = jax.jit(generate_tokens, static_argnums=(0, 1, 2, 3))


def stack_images(cfg: VLMConfig, rows: list[np.ndarray], images: Sequence) -> np.ndarray:
    """The rows' images as one float32 [B, max_images, H, W, C] batch (rows with fewer are padded with blank
    images their prompts never read: one program serves any image count), checked against the prompts."""
    if len(images) != len(rows):
        raise ValueError(f"{len(images)} image lists for {len(rows)} prompts; pass one list (maybe empty) per prompt")
    shape = (cfg.vit.image_size, cfg.vit.image_size, cfg.vit.channels)
    per_row = []
    for i, (ids, imgs) in enumerate(zip(rows, images)):
        imgs = np.asarray(imgs, np.float32).reshape(-1, *shape) if len(imgs) else np.zeros((0, *shape), np.float32)
        runs = int(np.sum(ids == cfg.image_token_id))
        if runs != len(imgs) * cfg.num_image_tokens:
            raise ValueError(
                f"prompt {i} holds {runs} image tokens but {len(imgs)} image(s) of {cfg.num_image_tokens} tokens "
                "were given; expand one <image> per image (gpt_jax.data.vqa.expand_image_tokens)"
            )
        if len(imgs) > cfg.max_images:
            raise ValueError(f"prompt {i} has {len(imgs)} images; this model takes at most {cfg.max_images}")
        per_row.append(imgs)
    out = np.zeros((len(rows), cfg.max_images, *shape), np.float32)
    for b, imgs in enumerate(per_row):
        out[b, : len(imgs)] = imgs
    return out


def generate_multimodal(
    cfg: VLMConfig, params, prompt_ids: Sequence, images: Sequence, options: GenerateOptions
) -> np.ndarray:
    """New token ids, int32 numpy [B, max_new_tokens] (options.pad_id after a stop token).

    prompt_ids: B rows of ids with every image already expanded to `cfg.num_image_tokens` image tokens.
    images: per row, its images in placeholder order: float32 [n_b, H, W, C] in the run's preprocessing
    (gpt_jax.data.image_io.load_image), n_b = the row's image runs (0 allowed). `params`: unboxed.
    """
    o = check_options(options)
    if o.num_beams > 1 or o.stop_strings:
        raise ValueError("multimodal generation takes sampling or greedy with stop_ids; no num_beams or stop_strings")
    # an answer is text: an image token in it would read as a placeholder if the sequence were re-encoded
    o = o.replace(banned_ids=tuple(sorted(set(o.banned_ids) | {cfg.image_token_id})))
    lm, n = cfg.lm, o.max_new_tokens
    rows = prompt_rows(list(prompt_ids))
    check_length(lm, max(map(len, rows)), n)
    images_BxNxHxWxC = stack_images(cfg, rows, images)
    mode, knobs = mode_of(o, lm.vocab_size), knobs_of(o, lm.vocab_size)
    prompt_BxP, start_B = pack(lm, rows, n)
    cache_len = prompt_BxP.shape[1] + n
    args = (jnp.asarray(prompt_BxP), jnp.asarray(images_BxNxHxWxC), jnp.asarray(start_B))
    out = generate_jit(cfg, mode, cache_len, n, params, *args, knobs, jax.random.key(o.seed))
    return np.asarray(out)
