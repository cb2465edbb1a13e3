"""Decode throughput: gpt_jax.generate (KV cache, one compiled program) vs HF transformers' PyTorch
`GPT2LMHeadModel.generate` (greedy, use_cache=True), same shapes, random weights.

  python -m benchmarks.decode [--cases=shakespeare,gpt2] [--batches=1,16] [--repeats=3] [--no_hf]
      [--nanogpt_dir=../shared/baselines/nanogpt]   (adds nanoGPT's own generate(), no KV cache)

One JSON line per (impl, model, batch): decode tokens/s (new tokens after the first, all rows),
per-token latency, prefill latency (prompt -> first token), end-to-end tokens/s; for gpt_jax the
first three time the compiled programs and api_end_to_end_tokens_per_sec the public generate()
call. Medians of --repeats runs, compilation excluded. Greedy, no stop token: every run makes all
its tokens. HF runs only if `transformers` and `torch` import (torch at its default threads).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import jax
import numpy as np

# name: (model shape, prompt length, new tokens)
CASES = {
    "shakespeare": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65), 16, 48),
    "gpt2": (dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257), 32, 32),
    # tests (benchmarks.run --quick): enough new tokens that decoding, not dispatch, dominates the time
    "tiny": (dict(n_layer=2, n_head=2, n_embd=64, block_size=256, vocab_size=65), 8, 192),
}


def _median_time(fn, repeats: int, min_total_s: float = 2.0) -> float:
    """Median of at least `repeats` runs, more (up to 200) until min_total_s: small cases are noisy."""
    times = []
    while len(times) < repeats or (sum(times) < min_total_s and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _report(impl, case, batch, prompt, new, prefill_s, total_s, **extra):
    decode_s = total_s - prefill_s
    return {
        "impl": impl,
        "model": case,
        "batch": batch,
        "prompt_len": prompt,
        "new_tokens": new,
        "decode_tokens_per_sec": batch * (new - 1) / decode_s,
        "ms_per_token": decode_s / (new - 1) * 1e3,
        "prefill_ms": prefill_s * 1e3,
        "end_to_end_tokens_per_sec": batch * new / total_s,
        **extra,
    }


def bench_jax(case: str, batch: int, repeats: int, min_total_s: float = 2.0) -> dict:
    import flax.linen as nn

    from gpt_jax.config import ModelConfig
    from gpt_jax.generation import decode as dec
    from gpt_jax.generation.engine import generate
    from gpt_jax.generation.options import GenerateOptions
    from gpt_jax.generation.processors import knobs_of, mode_of
    from gpt_jax.generation.prompts import pack
    from gpt_jax.model import init_params

    shape, prompt, new = CASES[case]
    cfg = ModelConfig(**shape)
    params = jax.jit(lambda: nn.meta.unbox(init_params(cfg, jax.random.key(0))))()
    rows = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, prompt))
    o = GenerateOptions(max_new_tokens=new, temperature=0)
    prompt_BxP, start_B = pack(cfg, list(rows), new)
    mode, knobs, key = mode_of(o, cfg.vocab_size), knobs_of(o, cfg.vocab_size), jax.random.key(0)
    prompt_BxP, start_B, knobs = jax.device_put((prompt_BxP, start_B, knobs))
    cache_len = prompt_BxP.shape[1] + new
    args = (params, prompt_BxP, start_B, knobs, key)

    def prefill():
        jax.block_until_ready(dec.prefill_jit(cfg, mode, cache_len, *args))

    def program():  # prefill + all decode steps: the one compiled program, inputs already on device
        jax.block_until_ready(dec.generate_jit(cfg, mode, cache_len, new, *args))

    def api():  # the public call: validation, padding, transfers included
        generate(cfg, params, rows, o)

    t0 = time.perf_counter()
    api()
    prefill()
    compile_s = time.perf_counter() - t0
    return _report(
        "gpt_jax",
        case,
        batch,
        prompt,
        new,
        _median_time(prefill, repeats, min_total_s),
        _median_time(program, repeats, min_total_s),
        api_end_to_end_tokens_per_sec=batch * new / _median_time(api, repeats, min_total_s),
        compile_s=compile_s,
        backend=jax.default_backend(),
    )


def bench_hf(case: str, batch: int, repeats: int) -> dict:
    import torch
    import transformers

    shape, prompt, new = CASES[case]
    config = transformers.GPT2Config(
        vocab_size=shape["vocab_size"],
        n_positions=shape["block_size"],
        n_embd=shape["n_embd"],
        n_layer=shape["n_layer"],
        n_head=shape["n_head"],
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, shape["vocab_size"], (batch, prompt)))
    mask = torch.ones_like(ids)
    # min_new_tokens: random weights may emit the eos id; every run must produce `new` tokens.
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0)

    def prefill():
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=True).logits[:, -1].argmax(-1)

    def full():
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, **kw)
        assert out.shape == (batch, prompt + new), out.shape

    full()
    prefill()
    return _report(
        "hf_torch",
        case,
        batch,
        prompt,
        new,
        _median_time(prefill, repeats),
        _median_time(full, repeats),
        torch_threads=torch.get_num_threads(),
        versions=f"torch {torch.__version__}, transformers {transformers.__version__}",
    )


def bench_nanogpt(case: str, batch: int, repeats: int, nanogpt_dir: str) -> dict:
    """nanoGPT's own `GPT.generate()` (no KV cache: the whole context re-run per token), imported by path
    from an unmodified checkout, random weights, same shape; top_k=1 makes its sampling greedy."""
    import importlib.util

    import torch

    path = os.path.join(os.path.expanduser(nanogpt_dir), "model.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; pass --nanogpt_dir=<the staged nanoGPT dir>")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    ng = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ng)
    shape, prompt, new = CASES[case]
    torch.manual_seed(0)
    model = ng.GPT(ng.GPTConfig(**shape, dropout=0.0, bias=True)).eval()
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, shape["vocab_size"], (batch, prompt)))

    def prefill():
        with torch.no_grad():
            model(ids)

    def full():
        with torch.no_grad():
            out = model.generate(ids, new, temperature=1.0, top_k=1)
        assert out.shape == (batch, prompt + new), out.shape

    full()
    return _report(
        "nanogpt_torch",
        case,
        batch,
        prompt,
        new,
        _median_time(prefill, repeats),
        _median_time(full, repeats),
        torch_threads=torch.get_num_threads(),
    )


def main(argv: list[str]) -> int:
    flags = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "1") for a in argv if a.startswith("--"))
    cases = flags.get("cases", "shakespeare,gpt2").split(",")
    batches = [int(b) for b in flags.get("batches", "1,16").split(",")]
    repeats = int(flags.get("repeats", 3))
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        have_torch, have_hf = True, "no_hf" not in flags
    except ImportError:
        have_torch = have_hf = False
        print(json.dumps({"note": "transformers/torch not importable: HF rows skipped"}))
    for case in cases:
        for batch in batches:
            print(json.dumps(bench_jax(case, batch, repeats)), flush=True)
            if have_hf:
                print(json.dumps(bench_hf(case, batch, repeats)), flush=True)
            if have_torch and "nanogpt_dir" in flags:
                print(json.dumps(bench_nanogpt(case, batch, repeats, flags["nanogpt_dir"])), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1:]))
