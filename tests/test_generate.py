"""Generation engine tests: KV-cache decoding vs full recompute for every position/attention switch,
left padding, every strategy's defining property, beam search vs exhaustive search (and vs HF
transformers when installed), no recompilation within a bucket, sharded == unsharded, streaming,
the one-line errors and the sample CLI.

Tiny models (2 layers, 32 embd) with numpy-made params scaled up so that outputs are not flat.
"""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from optional_deps import require

from gpt_jax import generate as gen
from gpt_jax.config import ModelConfig
from gpt_jax.generate import GenerateOptions as Opts
from gpt_jax.generation import decode as dec
from gpt_jax.model import GPT, init_params

TINY = ModelConfig(vocab_size=61, block_size=32, n_layer=2, n_head=4, n_embd=32)
ROWS = [np.array([3, 1, 4, 1, 5]), np.array([9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3])]  # lengths 5 and 11


@functools.cache
def params_of(cfg: ModelConfig, seed: int = 0):
    """Random params with large enough weights that greedy outputs vary (built in numpy: no compile)."""
    boxed = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    r = np.random.default_rng(seed)
    out = {}
    for path, s in traverse_util.flatten_dict(nn.meta.unbox(boxed)).items():
        x = r.standard_normal(s.shape).astype(np.float32)
        out[path] = 1.0 + 0.1 * x if path[-1] == "scale" else (0.05 if "bias" in path[-1] else 0.3) * x
    return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in out.items()})


@functools.cache
def _logits_fn(cfg: ModelConfig):
    return jax.jit(lambda p, ids: GPT(cfg).apply({"params": p}, ids))


def full_logits(cfg, params, seq):
    """Logits after every prefix of `seq`, by full recompute of one fixed-size (right-padded) buffer."""
    buf = np.zeros((1, cfg.block_size), np.int32)
    buf[0, : len(seq)] = seq
    return np.asarray(_logits_fn(cfg)(params, buf))[0, : len(seq)]


def naive_greedy(cfg, params, row, n, penalty=None):
    """argmax of GPT.apply on the growing sequence (optionally with HF's repetition penalty)."""
    seq = list(row)
    for _ in range(n):
        logits = full_logits(cfg, params, seq)[-1]
        if penalty:
            seen = np.zeros(cfg.vocab_size, bool)
            seen[seq] = True
            logits = np.where(seen, np.where(logits < 0, logits * penalty, logits / penalty), logits)
        seq.append(int(np.argmax(logits)))
    return seq[len(row) :]


# ----------------------------------------------------------------------------- greedy == full recompute

N = 8  # new tokens everywhere, so tests share compiled programs
# Every switch, four configs (each compiles a generate program and a reference forward).
VARIANTS = {
    "learned": {},
    "rope_gqa_dot_product": {"pos": "rope", "n_kv_head": 2, "attention": "dot_product"},
    "sinusoidal_scan_layers": {"pos": "sinusoidal", "scan_layers": True},
    "bf16_rmsnorm_swiglu_untied": {
        "dtype": "bfloat16",
        "norm": "rmsnorm",
        "mlp": "swiglu",
        "bias": False,
        "tie_embeddings": False,
    },
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_kv_cache_greedy_equals_full_recompute(name):
    """A left-padded batch of two prompts (5 and 11 tokens) vs each row alone, unpadded, by the
    argmax of a full forward over the growing sequence."""
    cfg = TINY.replace(**VARIANTS[name])
    params = params_of(cfg)
    out = gen.generate(cfg, params, ROWS, Opts(max_new_tokens=N, temperature=0))
    assert out.shape == (2, N) and out.dtype == np.int32
    np.testing.assert_array_equal(out, [naive_greedy(cfg, params, r, N) for r in ROWS])
    assert len(set(out.ravel().tolist())) > 1  # not a constant output


def test_model_cache_matches_full_logits():
    """GPT.apply with a cache and no positions/mask: a 4-token prefill, then one token at a time."""
    from gpt_jax.kv_cache import init_cache

    cfg, params = TINY, params_of(TINY)
    seq = np.array([ROWS[1]])
    step = jax.jit(lambda p, ids, c: GPT(cfg).apply({"params": p}, ids, cache=c))
    logits, cache = step(params, seq[:, :4], init_cache(cfg, 1, 16))
    steps = [logits]
    for t in range(4, seq.shape[1]):
        logits, cache = step(params, seq[:, t : t + 1], cache)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, 1)[0], full_logits(cfg, params, seq[0]), atol=2e-5)
    assert int(cache.index) == seq.shape[1]


def greedy():
    return gen.generate(TINY, params_of(TINY), ROWS, Opts(max_new_tokens=N, temperature=0))


def test_prompt_mask_input_equals_row_list():
    """The same prompts as a right-padded [B, L] array + mask (re-packed left-padded inside)."""
    ids = np.zeros((2, 11), np.int32)
    mask = np.zeros((2, 11), bool)
    for i, r in enumerate(ROWS):
        ids[i, : len(r)], mask[i, : len(r)] = r, True
    out = gen.generate(TINY, params_of(TINY), ids, Opts(max_new_tokens=N, temperature=0), prompt_mask_BxL=mask)
    np.testing.assert_array_equal(out, greedy())


# ----------------------------------------------------------------------------- strategies

# One sampling program (top-k bound 32, top-p and min-p on) serves every sampling test: the values
# are traced, so e.g. top_p=1.0 / min_p=0.0 switch a filter off without recompiling.
SAMPLE = dict(max_new_tokens=N, temperature=1.0, top_k=32, top_p=1.0, min_p=0.0)


def sample(rows=ROWS, **kw):
    return gen.generate(TINY, params_of(TINY), rows, Opts(**{**SAMPLE, **kw}))


def test_top_k_1_tiny_top_p_and_min_p_1_equal_greedy():
    for kw in ({"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}):
        np.testing.assert_array_equal(sample(temperature=1.3, seed=5, **kw), greedy(), err_msg=str(kw))


def test_banned_tokens_never_appear():
    banned = sorted(set(greedy().ravel().tolist()))[:4]
    outs = np.concatenate([sample(temperature=2.0, banned_ids=banned, seed=s) for s in range(6)])
    assert not np.isin(outs, banned).any()
    assert len(set(outs.ravel().tolist())) > 15  # really sampled


def test_stop_ids_stop_each_row_and_pad():
    ref = greedy()
    stop = int(ref[0, 2])
    out = gen.generate(TINY, params_of(TINY), ROWS, Opts(max_new_tokens=N, temperature=0, stop_ids=[stop], pad_id=-7))
    for row, r in zip(out, ref):
        hits = np.flatnonzero(r == stop)
        end = hits[0] + 1 if hits.size else len(r)
        np.testing.assert_array_equal(row[:end], r[:end])  # the stop token itself is kept
        assert (row[end:] == -7).all()
    assert (out[0, 3:] == -7).all()


def test_seed_reproducible_and_different_seeds_differ():
    a, b, c = sample(seed=7), sample(seed=7), sample(seed=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_repetition_penalty_matches_hf_semantics():
    p = params_of(TINY)
    out = gen.generate(TINY, p, ROWS, Opts(max_new_tokens=N, temperature=0, repetition_penalty=1.8))
    np.testing.assert_array_equal(out, [naive_greedy(TINY, p, r, N, penalty=1.8) for r in ROWS])
    assert (out != greedy()).any()


def test_no_recompilation_within_a_bucket():
    sample()
    before = dec.generate_jit._cache_size()
    calls = [
        ([ROWS[0][:2], ROWS[1]], dict(temperature=0.5, top_k=17, top_p=0.8, seed=1)),
        ([np.arange(16) % 61, ROWS[0]], dict(temperature=1.7, top_k=30, top_p=0.5, min_p=0.1, seed=2)),
        ([ROWS[1][:9], ROWS[1][:3]], dict(temperature=0.9, top_k=20, banned_ids=[1, 2], stop_ids=[5], seed=3)),
    ]
    for rows, kw in calls:  # prompt lengths in bucket 16, every traced knob changed
        sample(rows, **kw)
    assert dec.generate_jit._cache_size() == before


# ----------------------------------------------------------------------------- beam search


def test_beam_search_one_beam_is_greedy():
    one = gen.generate(TINY, params_of(TINY), ROWS, Opts(max_new_tokens=N, temperature=0, num_beams=1))
    np.testing.assert_array_equal(one, greedy())


def test_beam_search_with_all_prefixes_kept_is_exhaustive_search():
    """V=6, 3 new tokens, length_penalty=0, early_stopping='never' (canonical beam search): with 36
    beams no prefix is ever dropped, so the result is the most likely of all finished sequences."""
    cfg = ModelConfig(vocab_size=6, block_size=16, n_layer=2, n_head=2, n_embd=16)
    params, prompt, n = params_of(cfg, seed=2), [1, 2], 3

    @functools.cache
    def logp(prefix):
        lg = full_logits(cfg, params, prompt + list(prefix))[-1].astype(np.float64)
        return lg - lg.max() - np.log(np.exp(lg - lg.max()).sum())

    def best(stop):
        finished = lambda s: len(s) == n or (stop is not None and s[-1] == stop)
        seqs = [s for k in range(1, n + 1) for s in itertools.product(range(6), repeat=k)]
        seqs = [s for s in seqs if finished(s) and stop not in s[:-1]]
        return max(seqs, key=lambda s: sum(logp(s[:i])[t] for i, t in enumerate(s)))

    kw = dict(max_new_tokens=n, num_beams=36, length_penalty=0.0, early_stopping="never")
    for stop in (None, 1, 4):
        out = gen.generate(cfg, params, [prompt], Opts(stop_ids=[] if stop is None else [stop], **kw))
        assert tuple(t for t in out[0] if t >= 0) == best(stop), stop
    greedy_seq = naive_greedy(cfg, params, prompt, n)
    assert tuple(greedy_seq) != best(None)  # the case is one where beam search matters


def to_hf_gpt2(cfg: ModelConfig, params):
    """Our GPT-2 layout -> transformers.GPT2LMHeadModel (for comparisons only)."""
    import torch
    import transformers

    d = cfg.n_embd
    hf = transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=d,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(hf).eval()
    t = lambda x: torch.as_tensor(np.array(x, np.float32))
    sd = {"transformer.wte.weight": t(params["wte"]), "transformer.wpe.weight": t(params["wpe"])}
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = t(params["ln_f"]["scale"]), t(params["ln_f"]["bias"])
    for i in range(cfg.n_layer):
        p, pre = params[f"h_{i}"], f"transformer.h.{i}."
        a = p["attn"]
        sd[pre + "attn.c_attn.weight"] = t(
            np.concatenate([np.reshape(a[n]["kernel"], (d, d)) for n in ("query", "key", "value")], 1)
        )
        sd[pre + "attn.c_attn.bias"] = t(
            np.concatenate([np.reshape(a[n]["bias"], (d,)) for n in ("query", "key", "value")])
        )
        sd[pre + "attn.c_proj.weight"], sd[pre + "attn.c_proj.bias"] = (
            t(np.reshape(a["out_kernel"], (d, d))),
            t(a["out_bias"]),
        )
        for ln in ("ln_1", "ln_2"):
            sd[pre + ln + ".weight"], sd[pre + ln + ".bias"] = t(p[ln]["scale"]), t(p[ln]["bias"])
        for ours, theirs in (("fc", "c_fc"), ("proj", "c_proj")):
            sd[pre + f"mlp.{theirs}.weight"], sd[pre + f"mlp.{theirs}.bias"] = (
                t(p["mlp"][ours]["kernel"]),
                t(p["mlp"][ours]["bias"]),
            )
    model.load_state_dict(sd, strict=False)
    model.tie_weights()
    return model


@pytest.mark.parametrize("early_stopping, length_penalty", [(False, 1.0), (True, 1.0), ("never", 2.0), (False, -0.5)])
def test_beam_search_matches_transformers(early_stopping, length_penalty):
    torch = require("torch")  # the HF oracle: skipped locally when missing, a failure in CI
    require("transformers").logging.set_verbosity_error()
    torch.set_num_threads(1)  # a tiny model: torch's threads would only fight XLA's for the cores
    cfg = TINY
    params = params_of(cfg)
    model = to_hf_gpt2(cfg, params)
    prompts = np.array([ROWS[1][:6], ROWS[1][5:11]])
    ref_logits = model(torch.as_tensor(prompts)).logits.detach().numpy()
    np.testing.assert_allclose(ref_logits[0], full_logits(cfg, params, prompts[0]), atol=1e-4)  # same model
    stop = naive_greedy(cfg, params, prompts[0], 4)[3]  # a token the beams will meet
    kw = dict(max_new_tokens=10, num_beams=3, length_penalty=length_penalty, early_stopping=early_stopping)
    hf = model.generate(
        torch.as_tensor(prompts),
        attention_mask=torch.ones(prompts.shape, dtype=torch.long),
        do_sample=False,
        eos_token_id=stop,
        pad_token_id=cfg.vocab_size - 1,
        **kw,
    )[:, prompts.shape[1] :].numpy()
    ours = gen.generate(cfg, params, prompts, Opts(stop_ids=[stop], pad_id=cfg.vocab_size - 1, **kw))
    np.testing.assert_array_equal(ours[:, : hf.shape[1]], hf)
    assert (ours[:, hf.shape[1] :] == cfg.vocab_size - 1).all()


# ----------------------------------------------------------------------------- streaming, sliding


def test_stream_yields_chunks_equal_to_generate_and_cuts_at_stop_strings():
    p = params_of(TINY)
    kw = {**SAMPLE, "seed": 4, "chunk": 3}
    chunks = list(gen.stream(TINY, p, ROWS, Opts(**kw)))
    assert [c.shape for c in chunks] == [(2, 1), (2, 3), (2, 3), (2, 1)]
    full = sample(seed=4)
    np.testing.assert_array_equal(np.concatenate(chunks, 1), full)  # same samples, whatever the chunking

    decode = lambda ids: "".join(chr(97 + int(i) % 26) for i in ids)
    text = decode(full[0])
    stop = text[4:6]  # completes at token 6 of row 0 at the latest
    end = text.index(stop) + len(stop)
    out = np.concatenate(list(gen.stream(TINY, p, ROWS, Opts(stop_strings=[stop], decode=decode, **kw))), 1)
    np.testing.assert_array_equal(out[0, :end], full[0, :end])
    assert (out[0, end:] == gen.PAD_ID).all()
    if stop not in decode(full[1]):
        np.testing.assert_array_equal(out[1], full[1])


def test_slide_continues_past_block_size_for_learned_positions():
    """Block 32, 16-token prompts, 40 new tokens: windows of 16 new tokens, each re-encoding the
    last 16 tokens; every window equals the full-recompute greedy continuation of its context."""
    p = params_of(TINY)
    rows = [np.arange(16) * 7 % 61, np.arange(16) * 3 % 61]
    with pytest.raises(ValueError, match="exceeds block_size=32.*slide=True"):
        gen.generate(TINY, p, rows, Opts(max_new_tokens=40, temperature=0))
    out = gen.generate(TINY, p, rows, Opts(max_new_tokens=40, temperature=0, slide=True))
    assert out.shape == (2, 40)
    for row, new in zip(rows, out):
        seq = list(row)
        for start in (0, 16, 32):
            n = min(16, 40 - start)
            np.testing.assert_array_equal(new[start : start + n], naive_greedy(TINY, p, seq[-16:], n))
            seq += new[start : start + n].tolist()


# ----------------------------------------------------------------------------- sharding


def test_sharded_decoding_equals_one_device():
    from gpt_jax import sharding as shd
    from gpt_jax.generation.placement import Placement

    assert jax.device_count() == 8
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    params = params_of(TINY)
    prompts = [ROWS[0], ROWS[1], ROWS[1][:7], ROWS[0][:2]]  # batch 4 over data x fsdp
    sharded = gen.generate(TINY, params, prompts, Opts(max_new_tokens=N, temperature=0), mesh=mesh)
    np.testing.assert_array_equal(sharded, [naive_greedy(TINY, params, r, N) for r in prompts])
    placed = Placement(TINY, mesh).params(params)
    assert not placed["h_0"]["mlp"]["fc"]["kernel"].sharding.is_fully_replicated


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(prompt=[np.array([], np.int32)]), "prompt row 0 is empty"),
        (dict(max_new_tokens=40), "exceeds block_size=32"),
        (dict(max_new_tokens=0), "max_new_tokens=0 must be >= 1"),
        (dict(num_beams=0), "num_beams=0 must be >= 1"),
        (dict(top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p=1.5 must be in \(0, 1\]"),
        (dict(min_p=-0.1), r"min_p=-0.1 must be in \[0, 1\]"),
        (dict(top_k=0), "top_k=0 must be >= 1"),
        (dict(temperature=-1), "temperature=-1 must be >= 0"),
        (dict(repetition_penalty=0.0), "repetition_penalty=0.0 must be > 0"),
        (dict(early_stopping="sometimes"), "early_stopping='sometimes' must be one of"),
        (dict(chunk=0), "chunk=0 must be >= 1"),
        (dict(prompt=[np.array([1, 99])]), r"outside \[0, 61\)"),
        (dict(num_beams=2, top_k=5), "beam search is deterministic: drop top_k"),
        (dict(num_beams=2, slide=True), "beam search cannot slide"),
        (dict(stop_strings=["x"]), "stop_strings need decode"),
        (dict(stop_strings="x", decode=str), r"must be a list of strings, e.g. \['x'\]"),
        (dict(banned_ids=list(range(61))), "whole vocabulary"),
        (dict(stop_ids=[61]), r"stop_ids must be token ids in \[0, 61\)"),
        (dict(prompt=np.array([1, 2, 3])), r"must be \[B, L\]"),
    ],
)
def test_bad_input_is_a_one_line_error(kw, match):
    """Option errors come from GenerateOptions (on construction, or against the model's vocab)."""
    kw = {"prompt": ROWS, "max_new_tokens": 4, **kw}
    with pytest.raises(ValueError, match=match) as e:
        gen.generate(TINY, params_of(TINY), kw.pop("prompt"), Opts(**kw))
    assert "\n" not in str(e.value)


def test_options_are_values_and_checked_once_more_on_replace():
    o = Opts(max_new_tokens=4, stop_ids=[np.int64(3)], banned_ids=range(2), stop_strings=["a"], decode=str)
    assert (o.stop_ids, o.banned_ids, o.stop_strings) == ((3,), (0, 1), ("a",))
    assert o == Opts(max_new_tokens=4, stop_ids=(3,), banned_ids=(0, 1), stop_strings=("a",), decode=str)
    assert o.replace(temperature=0).greedy and not o.greedy
    with pytest.raises(ValueError, match="temperature=-2 must be >= 0"):
        o.replace(temperature=-2)
    with pytest.raises(TypeError):
        Opts(4)  # keyword-only
    with pytest.raises(TypeError, match="options must be a GenerateOptions"):
        gen.generate(TINY, params_of(TINY), ROWS, {"max_new_tokens": 4})
    with pytest.raises(ValueError, match="stream\\(\\) samples only; num_beams=2"):
        gen.stream(TINY, params_of(TINY), ROWS, Opts(max_new_tokens=4, num_beams=2))


def test_undecodable_ids_are_the_ids_past_the_tokenizer():
    assert gen.undecodable_ids(61, 65) == (61, 62, 63, 64)
    assert gen.undecodable_ids(65, 65) == ()


# ----------------------------------------------------------------------------- CLI


def test_sample_cli_streams_text_from_a_trained_run(tiny_run, capsys):
    from gpt_jax.cli import sample

    _, workdir, _ = tiny_run
    args = [f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=40", "--num_samples=2", "--seed=1"]
    assert sample.main(args) == 0
    first, second = capsys.readouterr().out.split(sample.SEPARATOR + "\n")
    for text in (first, second):  # block 32: the window slides
        assert text.startswith("ROMEO:") and len(text.rstrip("\n")) >= len("ROMEO:") + 30
    assert sample.main([f"--workdir={workdir}", "--prompt=", "--max_new_tokens=5"]) == 2
    assert "empty" in capsys.readouterr().err
