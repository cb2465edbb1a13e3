"""Multimodal KV-cache generation (gpt_jax.generation.multimodal) against the VLM recomputed in full."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.config import ModelConfig
from gpt_jax.generation import multimodal
from gpt_jax.generation.multimodal import generate_multimodal
from gpt_jax.generation.options import GenerateOptions
from gpt_jax.models import vlm
from gpt_jax.models.vit import ViTConfig

VIT = ViTConfig(image_size=8, patch_size=4, channels=1, n_layer=1, n_head=2, n_embd=16, conv_stem=False)
IMG = 1  # image token id
NEW = 6
FULL_LEN = 32  # the recomputation's fixed (right-padded) length
ENCODE = jax.jit(multimodal.encode_prompt, static_argnums=(0, 5))  # the prefill alone: its logits and cache


def _cfg(**lm) -> vlm.VLMConfig:
    lm_cfg = ModelConfig(**{"vocab_size": 40, "block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 32, **lm})
    return vlm.VLMConfig(vit=VIT, lm=lm_cfg, image_token_id=IMG, max_images=2)


def _params(cfg, seed=0):
    params = nn.meta.unbox(vlm.init(cfg, jax.random.key(seed)))
    # GPT-2's init (std 0.02) gives near-uniform logits, where float noise could flip a greedy choice
    # that the two paths agree on; sharper weights make every argmax clear.
    return jax.tree.map(lambda x: x * 4.0, params)


def _prompt(rng, n_images, n_text, cfg):
    ids = []
    for _ in range(n_images):
        ids += [IMG] * cfg.num_image_tokens + [int(rng.integers(2, cfg.lm.vocab_size))]
    ids += [int(t) for t in rng.integers(2, cfg.lm.vocab_size, n_text)]
    images = rng.uniform(size=(n_images, VIT.image_size, VIT.image_size, 1)).astype(np.float32)
    return np.asarray(ids, np.int32), images


def _full_greedy(cfg, params, ids, images, new=NEW, prefix_len=None):
    """Greedy by recomputation: the whole VLM on the growing sequence every step, the prompt as prefix
    (the sequence is right-padded to a fixed length, which no earlier position sees, so one program serves)."""
    model = vlm.VisionLanguageModel(cfg)
    imgs = np.zeros((cfg.max_images, VIT.image_size, VIT.image_size, 1), np.float32)
    imgs[: len(images)] = images
    step = jax.jit(lambda p, x, im, pl, last: model.apply({"params": p}, x, im, pl)[0, last])
    seq, out, first_logits = list(ids), [], None
    pl = np.asarray([len(ids) if prefix_len is None else prefix_len], np.int32)
    for _ in range(new):
        padded = np.zeros((1, FULL_LEN), np.int32)
        padded[0, : len(seq)] = seq
        logits = step(params, padded, imgs[None], pl, len(seq) - 1)
        first_logits = logits if first_logits is None else first_logits
        logits = logits.at[IMG].set(-jnp.inf)  # generation never produces the image token
        out.append(int(jnp.argmax(logits)))
        seq.append(out[-1])
    return out, np.asarray(first_logits)


def test_cached_equals_full_recomputation():
    cfg = _cfg()
    params = _params(cfg)
    rng = np.random.default_rng(0)
    for n_images, n_text in ((1, 5), (2, 3)):
        ids, images = _prompt(rng, n_images, n_text, cfg)
        got = generate_multimodal(cfg, params, [ids], [images], GenerateOptions(max_new_tokens=NEW, temperature=0))
        want, _ = _full_greedy(cfg, params, ids, images)
        assert got[0].tolist() == want


def test_the_prefix_mask_is_what_the_cache_reproduces():
    """The reference is sensitive to the mask: recomputing with a causal prompt (prefix_len=0) changes the
    first logits, and the cached path matches the prefix-LM one."""
    cfg = _cfg()
    params = _params(cfg)
    ids, images = _prompt(np.random.default_rng(1), 1, 4, cfg)
    _, prefix_logits = _full_greedy(cfg, params, ids, images, new=1)
    _, causal_logits = _full_greedy(cfg, params, ids, images, new=1, prefix_len=0)
    assert np.abs(prefix_logits - causal_logits).max() > 1e-2
    prompt = jnp.asarray(ids)[None]
    logits, _ = ENCODE(cfg, params, prompt, jnp.asarray(images)[None], jnp.zeros(1, jnp.int32), 32)
    np.testing.assert_allclose(np.asarray(logits[0]), prefix_logits, atol=2e-4, rtol=1e-4)


def test_images_matter():
    """The images reach the answer: other pixels, other first logits."""
    cfg = _cfg()
    params = _params(cfg)
    ids, images = _prompt(np.random.default_rng(2), 2, 3, cfg)
    prompt, start = jnp.asarray(ids)[None], jnp.zeros(1, jnp.int32)
    first = lambda imgs: np.asarray(ENCODE(cfg, params, prompt, jnp.asarray(imgs)[None], start, 32)[0])
    base = first(images)
    assert np.abs(base - first(images[::-1])).max() > 1e-2  # the order of the images counts too
    assert np.abs(base - first(np.concatenate([images[:1], 1.0 - images[1:]]))).max() > 1e-2


def test_batched_equals_one_by_one():
    cfg = _cfg()
    params = _params(cfg)
    rng = np.random.default_rng(3)
    rows = [_prompt(rng, n, t, cfg) for n, t in ((1, 2), (2, 6), (0, 9), (1, 11))]
    opts = GenerateOptions(max_new_tokens=NEW, temperature=0)
    batched = generate_multimodal(cfg, params, [r[0] for r in rows], [r[1] for r in rows], opts)
    for b, (ids, images) in enumerate(rows):
        alone = generate_multimodal(cfg, params, [ids], [images], opts)
        assert batched[b].tolist() == alone[0].tolist(), b
    # sampling: reproducible by seed (the batch shares one key per step, as text generation does)
    opts = GenerateOptions(max_new_tokens=NEW, temperature=1.0, seed=5)
    one = generate_multimodal(cfg, params, [r[0] for r in rows], [r[1] for r in rows], opts)
    two = generate_multimodal(cfg, params, [r[0] for r in rows], [r[1] for r in rows], opts)
    assert one.shape == (4, NEW) and np.array_equal(one, two)


def test_stop_id_pads_after():
    cfg = _cfg()
    params = _params(cfg)
    ids, images = _prompt(np.random.default_rng(4), 1, 3, cfg)
    free = generate_multimodal(cfg, params, [ids], [images], GenerateOptions(max_new_tokens=NEW, temperature=0))
    stop = int(free[0, 1])
    got = generate_multimodal(
        cfg, params, [ids], [images], GenerateOptions(max_new_tokens=NEW, temperature=0, stop_ids=(stop,))
    )
    first = free[0].tolist().index(stop)
    assert got[0, : first + 1].tolist() == free[0, : first + 1].tolist()
    assert (got[0, first + 1 :] == -1).all()


def test_bad_input_is_one_line():
    cfg = _cfg()
    params = _params(cfg)
    ids, images = _prompt(np.random.default_rng(5), 1, 3, cfg)
    opts = GenerateOptions(max_new_tokens=NEW, temperature=0)
    with pytest.raises(ValueError, match="image tokens but 2 image"):
        generate_multimodal(cfg, params, [ids], [np.concatenate([images, images])], opts)
    with pytest.raises(ValueError, match="at most 2"):
        three = np.concatenate([ids[: cfg.num_image_tokens + 1]] * 3)
        generate_multimodal(cfg, params, [three], [np.concatenate([images] * 3)], opts)
    with pytest.raises(ValueError, match="no num_beams"):
        generate_multimodal(cfg, params, [ids], [images], opts.replace(num_beams=2))
    with pytest.raises(ValueError, match="block_size"):
        generate_multimodal(cfg, params, [ids], [images], opts.replace(max_new_tokens=64))
