"""The vit / vlm families (issue 17): prefix mask, placeholder filling, 8-device shardings, config round trip."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import sharding as shd
from gpt_jax.config import ModelConfig
from gpt_jax.data import vqa
from gpt_jax.models import registry, vit, vlm

P = 4  # image tokens per image in the tiny model: 8x8 images, 4x4 patches -> 2x2 grid


def tiny(merge: int = 1, **lm) -> vlm.VLMConfig:
    return vlm.VLMConfig(
        vit=vit.ViTConfig(image_size=8, patch_size=4 // merge, n_layer=1, n_head=2, n_embd=16, stem_channels=4),
        lm=ModelConfig(vocab_size=20, block_size=24, n_layer=2, n_head=2, n_embd=16, **lm),
        max_images=2,
        merge=merge,
    )


def forward(cfg, params, ids, images, prefix_len):
    return vlm.VisionLanguageModel(cfg).apply({"params": params}, ids, images, prefix_len)


@pytest.fixture(scope="module")
def model():
    cfg = tiny()
    params = nn.meta.unbox(vlm.init(cfg, jax.random.key(0)))
    # one row: image 0 (4 tokens), 3 prompt tokens, image 1 (4 tokens), 1 prompt token | 4 answer tokens
    ids = np.array([[1] * P + [5, 6, 7] + [1] * P + [8] + [9, 10, 11, 12]], np.int32)
    images = np.asarray(jax.random.uniform(jax.random.key(1), (1, 2, 8, 8, 1)))
    return cfg, params, ids, images, np.array([2 * P + 4], np.int32)


def moved(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max(axis=-1)[0] > 1e-6  # [L]: which positions' logits moved


def test_prefix_tokens_see_each_other_both_ways(model):
    cfg, params, ids, images, prefix = model
    base = forward(cfg, params, ids, images, prefix)
    later_prompt = ids.copy()
    later_prompt[0, 2 * P + 3] = 13  # the last prompt token
    m = moved(base, forward(cfg, params, later_prompt, images, prefix))
    assert m[: 2 * P + 4].all()  # every image token and every prompt token sees it (bidirectional prefix)
    second = images.copy()
    second[:, 1] = 1.0 - second[:, 1]
    m = moved(base, forward(cfg, params, ids, second, prefix))
    assert m.all() and m[:P].all()  # the first image's tokens see the second image


def test_answer_tokens_are_causal(model):
    cfg, params, ids, images, prefix = model
    base = forward(cfg, params, ids, images, prefix)
    j = 2 * P + 6  # the third answer token
    changed = ids.copy()
    changed[0, j] = 3
    m = moved(base, forward(cfg, params, changed, images, prefix))
    assert not m[:j].any() and m[j:].all()


def test_prefix_len_is_what_makes_the_prompt_bidirectional(model):
    cfg, params, ids, images, _ = model
    causal = np.zeros((1,), np.int32)
    a = forward(cfg, params, ids, images, causal)
    changed = ids.copy()
    changed[0, 2 * P + 3] = 13
    m = moved(a, forward(cfg, params, changed, images, causal))
    assert not m[: 2 * P + 3].any()  # with prefix_len 0 the same change moves nothing before it


def test_placeholders_are_filled_in_order_across_runs():
    image_BxNxPxD = jnp.arange(2 * 2 * 3 * 2, dtype=jnp.float32).reshape(2, 2, 3, 2) + 100
    ids = jnp.array([[1, 1, 1, 5, 1, 1, 1, 6], [5, 1, 1, 1, 1, 1, 1, 6]], jnp.int32)
    x = jnp.zeros((2, 8, 2))
    out = np.asarray(vlm.place_images(x, ids, image_BxNxPxD, 1))
    for row in range(2):
        slots = np.flatnonzero(np.asarray(ids[row]) == 1)
        np.testing.assert_array_equal(out[row, slots], np.asarray(image_BxNxPxD[row]).reshape(6, 2))
        np.testing.assert_array_equal(out[row, np.asarray(ids[row]) != 1], 0.0)


def test_swapping_the_images_swaps_what_the_model_sees(model):
    cfg, params, ids, images, prefix = model
    x = vlm.VisionLanguageModel(cfg).apply({"params": params}, ids, images, method="embed")
    swapped = vlm.VisionLanguageModel(cfg).apply({"params": params}, ids, images[:, ::-1], method="embed")
    first, second = slice(0, P), slice(P + 3, 2 * P + 3)
    np.testing.assert_allclose(x[0, first], swapped[0, second], atol=1e-6)
    np.testing.assert_allclose(x[0, second], swapped[0, first], atol=1e-6)


def test_more_images_than_placeholders_is_a_one_line_error():
    tok = vqa.build_tokenizer()
    with pytest.raises(ValueError, match=r"3 image\(s\) given but the prompt has 2 <image>") as e:
        vqa.encode_prompt(tok, "<image> <image> which is larger, the first or the second?", 3, P)
    assert "\n" not in str(e.value)
    ids = vqa.encode_prompt(tok, "which is larger, the first or the second?", 2, P)
    assert (ids == tok.image_id).sum() == 2 * P and (ids[: 2 * P] == tok.image_id).all()


def test_merge_joins_neighbouring_patches():
    cfg = tiny(merge=2)  # 8x8 images, patch 2 -> 4x4 grid, 2x2 merge -> 4 LM tokens per image
    assert cfg.vit.num_patches == 16 and cfg.num_image_tokens == 4
    params = nn.meta.unbox(vlm.init(cfg, jax.random.key(0)))
    ids, images, prefix = vlm.example_inputs(cfg, 12)
    assert forward(cfg, params, ids, images, prefix).shape == (1, 12, 20)
    with pytest.raises(ValueError, match="does not divide"):
        dataclasses.replace(cfg, merge=3)


def test_saved_config_round_trips():
    cfg = tiny(merge=2)
    fields = registry.saved_fields(vlm.FAMILY, cfg)
    assert fields["family"] == "vlm" and registry.config_from_saved(fields) == cfg
    c = vit.ViTConfig(image_size=8, patch_size=2, num_classes=10)
    assert registry.config_from_saved(registry.saved_fields(vit.FAMILY, c)) == c


def test_vit_rejects_images_of_another_size():
    cfg = vit.ViTConfig(image_size=8, patch_size=4, num_classes=3)
    params = vit.init(cfg, jax.random.key(0))
    with pytest.raises(ValueError, match="images are 9x9x1 but the encoder takes 8x8x1"):
        vit.ViTClassifier(cfg).apply({"params": params}, jnp.zeros((1, 9, 9, 1)))


@pytest.mark.parametrize("axes", [{"data": 8}, {"data": 2, "fsdp": 2, "tensor": 2}, {"fsdp": 4, "tensor": 2}])
def test_sharded_encoder_and_model_match_one_device(axes):
    cfg = tiny()
    cfg = dataclasses.replace(cfg, vit=dataclasses.replace(cfg.vit, n_embd=32, n_head=4))
    boxed = vlm.init(cfg, jax.random.key(0))
    params = nn.meta.unbox(boxed)
    rng = np.random.default_rng(0)
    images = rng.random((8, 2, 8, 8, 1)).astype(np.float32)
    ids = np.concatenate([np.ones((8, 2 * P), np.int32), rng.integers(3, 20, (8, 6))], 1).astype(np.int32)
    prefix = np.full((8,), 2 * P + 3, np.int32)
    enc = lambda p, x: vit.ViTEncoder(cfg.vit).apply({"params": p["vit"]}, x.reshape(16, 8, 8, 1))
    want_tokens, want_logits = enc(params, images), forward(cfg, params, ids, images, prefix)

    mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1, **axes})
    assert mesh.devices.size == 8
    placed = jax.device_put(params, shd.logical_sharding(boxed, mesh))
    batch = shd.batch_sharding(mesh, 5)
    with jax.set_mesh(mesh), nn.logical_axis_rules(shd.DEFAULT_RULES):
        x = jax.device_put(images, batch)
        got_tokens = jax.jit(enc)(placed, x)
        got_logits = jax.jit(lambda p, i, x, n: forward(cfg, p, i, x, n))(
            placed,
            jax.device_put(ids, shd.batch_sharding(mesh, 2)),
            x,
            jax.device_put(prefix, shd.batch_sharding(mesh, 1)),
        )
    assert len(placed["vit"]["h_0"]["mlp"]["fc"]["kernel"].sharding.device_set) == 8
    np.testing.assert_allclose(got_tokens, want_tokens, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(got_logits, want_logits, atol=2e-5, rtol=1e-5)
