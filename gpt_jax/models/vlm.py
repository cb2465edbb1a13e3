"""The "vlm" family: ViT -> projector (MLP to the LM width) -> image tokens at the placeholder runs -> GPT.

In `ids_BxL` each image is `num_image_tokens` consecutive `image_token_id` tokens (gpt_jax.data.vqa expands
the text's `<image>`); the projected tokens of images 0..N-1 fill those runs in order. Attention is the
prefix-LM mask (gpt_jax.masks): bidirectional over positions < prefix_len (images and prompt), causal after.
Params: {"vit": ..., "projector": ..., "lm": <a gpt-family GPT tree>}, so a text GPT grafts into "lm".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gpt_jax import flops
from gpt_jax.config import FIELDS as LM_FIELDS
from gpt_jax.config import ModelConfig
from gpt_jax.layers import Dense
from gpt_jax.masks import attention_mask
from gpt_jax.model import GPT
from gpt_jax.models import gpt, vit
from gpt_jax.models.base import ModelFamily
from gpt_jax.models.vit import ViTConfig, ViTEncoder

IMAGE_TOKEN_ID = 1  # the word tokenizer's `<image>` (gpt_jax.data.tokenizers.word)


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    vit: ViTConfig
    lm: ModelConfig
    image_token_id: int = IMAGE_TOKEN_ID
    max_images: int = 2
    merge: int = 1  # the projector joins merge x merge neighbouring patches into one LM token (Qwen2-VL's 2x2)

    def __post_init__(self):
        if self.vit.grid % self.merge:
            raise ValueError(
                f"model.merge={self.merge} does not divide the {self.vit.grid}x{self.vit.grid} patch grid; "
                "pick a divisor of image_size / patch_size"
            )

    @property
    def num_image_tokens(self) -> int:
        return (self.vit.grid // self.merge) ** 2


class Projector(nn.Module):
    """Encoder tokens -> LM tokens: merge x merge neighbours concatenated, then Dense, GELU, Dense to the LM
    width (LLaVA-1.5's MLP projector; the merge as in Qwen2-VL, fewer tokens for the LM)."""

    cfg: VLMConfig

    @nn.compact
    def __call__(self, tokens_BxPxE):
        lm, g, m = self.cfg.lm, self.cfg.vit.grid, self.cfg.merge
        b, _, e = tokens_BxPxE.shape
        h = tokens_BxPxE.reshape(b, g // m, m, g // m, m, e).transpose(0, 1, 3, 2, 4, 5)
        tokens_BxPxE = h.reshape(b, (g // m) ** 2, m * m * e)
        h = nn.gelu(Dense((lm.n_embd,), (None, "embed"), lm, name="fc")(tokens_BxPxE), approximate=True)
        return Dense((lm.n_embd,), ("mlp", "embed"), lm, name="proj")(h)


def place_images(x_BxLxD, ids_BxL, image_BxNxPxD, image_token_id: int):
    """x with the k-th placeholder token of each row replaced by the k-th image token (images in order).

    Placeholders beyond N*P read a zero vector; gpt_jax.data.vqa refuses such prompts before they get here.
    """
    b, n, p, d = image_BxNxPxD.shape
    is_image_BxL = ids_BxL == image_token_id
    slot_BxL = jnp.cumsum(is_image_BxL, axis=1) - 1  # index among this row's placeholders
    flat_BxMxD = jnp.concatenate([image_BxNxPxD.reshape(b, n * p, d), jnp.zeros((b, 1, d), x_BxLxD.dtype)], axis=1)
    slot_BxL = jnp.where(is_image_BxL & (slot_BxL < n * p), slot_BxL, n * p)
    picked_BxLxD = jnp.take_along_axis(flat_BxMxD, slot_BxL[..., None], axis=1)
    return jnp.where(is_image_BxL[..., None], picked_BxLxD, x_BxLxD)


class VisionLanguageModel(nn.Module):
    """`apply(p, ids_BxL, images_BxNxHxWxC, prefix_len_B) -> logits_BxLxV` (float32)."""

    cfg: VLMConfig

    def setup(self):
        self.vit = ViTEncoder(self.cfg.vit)
        self.projector = Projector(self.cfg)
        self.lm = GPT(self.cfg.lm)

    def _embed(self, ids_BxL, images_BxNxHxWxC, deterministic: bool):
        b, n = images_BxNxHxWxC.shape[:2]
        tokens = self.vit(images_BxNxHxWxC.reshape(b * n, *images_BxNxHxWxC.shape[2:]), deterministic=deterministic)
        image_BxNxPxD = self.projector(tokens).reshape(b, n, self.cfg.num_image_tokens, -1)
        x_BxLxD = place_images(self.lm(ids_BxL, token_embeds=True), ids_BxL, image_BxNxPxD, self.cfg.image_token_id)
        return x_BxLxD, tokens.mean(axis=1).reshape(b, n, -1)

    def embed(self, ids_BxL, images_BxNxHxWxC, *, deterministic: bool = True):
        """x_BxLxD: token embeddings with the image tokens in the placeholder runs (no positions yet);
        what the GPT takes as `embeds_BxLxD` (a KV-cache prefill starts here)."""
        return self._embed(ids_BxL, images_BxNxHxWxC, deterministic)[0]

    def __call__(
        self,
        ids_BxL,
        images_BxNxHxWxC,
        prefix_len_B,
        *,
        deterministic: bool = True,
        features: bool = False,
        image_features: bool = False,
    ):
        """logits_BxLxV; with `image_features` also each image's mean encoder token pooled_BxNxE (for an
        auxiliary recognition loss on the encoder, gpt_jax.tasks.vqa)."""
        x_BxLxD, pooled_BxNxE = self._embed(ids_BxL, images_BxNxHxWxC, deterministic)
        mask_BxLxL = attention_mask({"inputs": ids_BxL, "prefix_len": prefix_len_B}, ids_BxL.shape[1])
        out = self.lm(
            ids_BxL, mask_BxLxS=mask_BxLxL, deterministic=deterministic, embeds_BxLxD=x_BxLxD, features=features
        )
        return (out, pooled_BxNxE) if image_features else out


def config_from(model_section: Mapping[str, Any], vocab_size: int) -> VLMConfig:
    """`config.model`: the GPT keys are the LM's; `model.vit` the encoder's; `model.max_images`."""
    section = dict(model_section)
    vit_section, max_images = section.pop("vit", None), section.pop("max_images", None) or 2
    image_token_id, merge = section.pop("image_token_id", None), section.pop("merge", None) or 1
    lm = gpt.config_from({k: v for k, v in section.items() if k in LM_FIELDS + ("preset", "family")}, vocab_size)
    return VLMConfig(
        vit=vit.vit_config_from(vit_section, num_classes=None),
        lm=lm,
        image_token_id=IMAGE_TOKEN_ID if image_token_id is None else image_token_id,
        max_images=max_images,
        merge=merge,
    )


def config_from_saved(fields: dict) -> VLMConfig:
    fields = dict(fields)
    return VLMConfig(
        vit=vit.FAMILY.config_from_saved(fields.pop("vit")),
        lm=gpt.config_from_saved(fields.pop("lm")),
        **{k: v for k, v in fields.items() if k in ("image_token_id", "max_images", "merge")},
    )


def example_inputs(cfg: VLMConfig, length: int | None = None):
    """(ids_BxL, images_BxNxHxWxC, prefix_len_B) of one row: every image's placeholders, then text."""
    p, n = cfg.num_image_tokens, cfg.max_images
    length = length or min(cfg.lm.block_size, n * p + 4)
    ids = jnp.zeros((1, length), jnp.int32).at[0, : min(n * p, length)].set(cfg.image_token_id)
    images = jnp.zeros((1, n, cfg.vit.image_size, cfg.vit.image_size, cfg.vit.channels), jnp.float32)
    return ids, images, jnp.full((1,), min(n * p, length), jnp.int32)


def init(cfg: VLMConfig, rng):
    return VisionLanguageModel(cfg).init({"params": rng}, *example_inputs(cfg))["params"]


def matrix_dims(params):
    return {
        "vit": vit.matrix_dims(params["vit"]),
        "projector": vit.matrix_dims(params["projector"]),
        "lm": gpt.matrix_dims(params["lm"]),
    }


def flops_per_token(cfg: VLMConfig, seq_len: int, lm_head: bool = True) -> float:
    """Per LM position, the encoder's FLOPs of `max_images` images spread over the row."""
    d_vit, d = cfg.vit.n_embd, cfg.lm.n_embd
    projector = cfg.num_image_tokens * 2 * (cfg.merge**2 * d_vit * d + d * d)
    images = cfg.max_images * (vit.encoder_flops(cfg.vit) + projector)
    return flops.matmul_flops_per_token(cfg.lm, seq_len, lm_head) + images / seq_len


FAMILY = ModelFamily(
    name="vlm",
    config_from=config_from,
    config_from_saved=config_from_saved,
    module=VisionLanguageModel,
    init=init,
    matrix_dims=matrix_dims,
    flops_per_token=flops_per_token,
)


def combine_params(method, trainable, frozen, rng=None) -> dict:
    """The VLM params of a vqa run's state: sub-models split between trainable and frozen (vqa.freeze), the LM's
    own split recombined by its PEFT `method` (gpt_jax.peft) from the LM part and frozen["lm_base"]."""
    parts = {**frozen, **trainable}
    lm = method.combine(parts["lm"], frozen.get("lm_base") or {}, rng)
    return {"vit": parts["vit"], "projector": parts["projector"], "lm": lm}
