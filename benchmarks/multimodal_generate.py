"""Multimodal answers: KV-cached generation (one prefill of images + prompt, then decode) against recomputing
the whole VLM on the growing sequence at every step, at the shapes of configs/multimodal/digits_vqa.py.

  python -m benchmarks.multimodal_generate [--batch=64] [--new=4] [--repeats=5]

Random init (speed does not depend on training); greedy; warm medians. Prints one line per method and
whether both produce the same tokens.
"""

from __future__ import annotations

import sys
import time

import flax.linen as nn
import jax
import numpy as np

from gpt_jax import run_config
from gpt_jax.cli import flags
from gpt_jax.data import vqa
from gpt_jax.generation.multimodal import generate_multimodal
from gpt_jax.generation.options import GenerateOptions
from gpt_jax.models import vlm

USAGE = "usage: python -m benchmarks.multimodal_generate [--batch=64] [--new=4] [--repeats=5]"
SPEC = [
    flags.Flag("batch", int, 64, "questions per call"),
    flags.Flag("new", int, 4, "answer tokens generated"),
    flags.Flag("repeats", int, 5, "timed calls per method (after one warm-up)"),
    flags.Flag("config", str, "configs/multimodal/digits_vqa.py", "the config whose model shapes are used"),
]


def bench(argv) -> int:
    _, v = flags.parse(argv, SPEC, usage=USAGE)
    b, new = v["batch"], v["new"]
    tok = vqa.build_tokenizer()
    cfg = vlm.config_from(run_config.load_config(v["config"]).model, tok.vocab_size)
    params = nn.meta.unbox(vlm.init(cfg, jax.random.key(0)))
    prompt = vqa.encode_prompt(tok, "what digit is this?", 1, cfg.num_image_tokens)
    shape = (cfg.vit.image_size, cfg.vit.image_size, cfg.vit.channels)
    images = np.random.default_rng(0).uniform(size=(b, 1, *shape)).astype(np.float32)
    options = GenerateOptions(max_new_tokens=new, temperature=0, banned_ids=(cfg.image_token_id,))

    def cached():
        return generate_multimodal(cfg, params, [prompt] * b, list(images), options)

    model = vlm.VisionLanguageModel(cfg)

    @jax.jit
    def next_token(params, seq_BxL, images_BxNxHxWxC, prefix_B, last):
        logits_BxV = model.apply({"params": params}, seq_BxL, images_BxNxHxWxC, prefix_B)[:, last]
        return logits_BxV.at[:, cfg.image_token_id].set(-np.inf).argmax(-1)

    padded = np.zeros((b, cfg.max_images, *shape), np.float32)
    padded[:, :1] = images

    def full():
        seq = np.zeros((b, len(prompt) + new), np.int32)
        seq[:, : len(prompt)] = prompt
        prefix = np.full((b,), len(prompt), np.int32)
        for t in range(new):
            seq[:, len(prompt) + t] = np.asarray(next_token(params, seq, padded, prefix, len(prompt) - 1 + t))
        return seq[:, len(prompt) :]

    got = {}
    for name, fn in (("kv_cached", cached), ("full_recompute", full)):
        got[name] = np.asarray(fn())
        times = []
        for _ in range(v["repeats"]):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        ms = 1000 * float(np.median(times))
        print(f"{name}: batch {b}, prompt {len(prompt)} tokens ({cfg.num_image_tokens} image), {new} new: "
              f"{ms:.1f} ms/call, {b * new / ms * 1000:.0f} answer tokens/s")  # fmt: skip
    print(f"same tokens: {bool(np.array_equal(got['kv_cached'], got['full_recompute']))}")
    return 0


if __name__ == "__main__":
    sys.exit(flags.run(bench, sys.argv[1:]))
