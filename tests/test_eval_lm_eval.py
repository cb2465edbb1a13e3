"""Our HellaSwag and WikiText-2 (gpt_jax.eval_tasks) agree with the real lm-eval package run in-process on
the same model through gpt_jax.serving.lm_eval_lm: same acc / acc_norm, same per-request log-likelihoods
(float tolerance: our scorer sums on the device in float32), same perplexities; and the adapter's
generate_until is gpt_jax's greedy decoding cut at the until strings."""

import os
import pathlib

import pytest

pytest.importorskip("lm_eval")

DATA = pathlib.Path(os.environ.get("GPT_JAX_DATA_DIR", pathlib.Path(__file__).parents[2] / "shared" / "data"))
WINDOW = 64


@pytest.fixture(scope="module")
def model():
    """Random-init 2-layer byte model (weights x5: not near-uniform), learned positions, block 64."""
    import flax.linen as nn
    import jax

    from gpt_jax.config import ModelConfig
    from gpt_jax.data.tokenizers.byte import ByteTokenizer
    from gpt_jax.model import init_params

    cfg = ModelConfig(vocab_size=256, block_size=WINDOW, n_layer=2, n_head=2, n_embd=32)
    params = jax.jit(lambda k: jax.tree.map(lambda x: x * 5, nn.meta.unbox(init_params(cfg, k))))(jax.random.key(2))
    return cfg, params, ByteTokenizer()


@pytest.fixture(scope="module")
def include():
    from gpt_jax.serving import lm_eval_lm

    return lm_eval_lm.task_dir(str(DATA))


def recording_lm(cfg, params, tok):
    from gpt_jax.serving.lm_eval_lm import GptJaxLM

    class Recording(GptJaxLM):
        seen: dict = {}

        def loglikelihood(self, requests, disable_tqdm=False):
            out = super().loglikelihood(requests, disable_tqdm)
            self.seen.update({tuple(r.args): ll for r, (ll, _) in zip(requests, out)})
            return out

    return Recording(cfg, params, tok, window=WINDOW)


def test_hellaswag_agrees_with_lm_eval(model, include):
    from gpt_jax.eval_tasks import hellaswag
    from gpt_jax.eval_tasks.base import EvalOptions
    from gpt_jax.eval_tasks.scoring import Scorer
    from gpt_jax.serving.lm_eval_lm import evaluate

    cfg, params, tok = model
    n = 12  # 48 requests; some contexts are longer than the window (left truncation is exercised too)
    lm = recording_lm(cfg, params, tok)
    ref = evaluate(lm, ["hellaswag_local"], n, include)["hellaswag_local"]
    rows = hellaswag.load_rows(EvalOptions(limit=n, data_dir=str(DATA)))
    kept, pairs = hellaswag.requests(tok, rows, skip=False)
    lls = Scorer(cfg, params, WINDOW, batch_tokens=512).loglikelihoods(pairs)
    ours = hellaswag.metrics(kept, [ll for ll, _ in lls])
    assert len(kept) == ref["sample_len"] == n
    assert (ours["acc"], ours["acc_norm"]) == (ref["acc,none"], ref["acc_norm,none"]), (ours, ref)
    keys = [(r["ctx"], " " + e) for r in rows for e in r["endings"]]
    assert set(keys) == set(lm.seen) and len(keys) == 4 * n
    for key, (ll, _) in zip(keys, lls):
        assert ll == pytest.approx(lm.seen[key], rel=1e-5, abs=1e-4), key
    assert len({round(lm.seen[k], 3) for k in keys}) > 40  # real, distinct scores (not all ties)


def test_wikitext_agrees_with_lm_eval(model, include):
    from gpt_jax.eval_tasks import wikitext
    from gpt_jax.eval_tasks.base import EvalOptions
    from gpt_jax.eval_tasks.scoring import Scorer
    from gpt_jax.serving.lm_eval_lm import GptJaxLM, evaluate

    cfg, params, tok = model
    ref = evaluate(GptJaxLM(cfg, params, tok, window=WINDOW), ["wikitext2_local"], 2, include)["wikitext2_local"]
    ours = wikitext.run(Scorer(cfg, params, WINDOW, batch_tokens=512), tok, EvalOptions(limit=2, data_dir=str(DATA)))
    assert ours["documents"] == ref["sample_len"] == 2
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours[name] == pytest.approx(ref[f"{name},none"], rel=1e-6), (name, ours, ref)
    assert ours["bits_per_byte"] > 1  # a random model: far from a trained one's ~1-2 bits


def test_generate_until_is_greedy_cut_at_until(model):
    from gpt_jax.generation.engine import generate
    from gpt_jax.generation.options import GenerateOptions
    from gpt_jax.serving.lm_eval_lm import GptJaxLM

    cfg, params, tok = model

    class Req:
        def __init__(self, *args):
            self.args = args

    lm = GptJaxLM(cfg, params, tok, window=WINDOW)
    prompt = "The cat sat on the mat and"
    ref = generate(cfg, params, [tok.encode(prompt)], GenerateOptions(max_new_tokens=12, temperature=0))[0]
    full = tok.decode(ref)
    stop = next(c for c in full[1:] if c != full[0])  # in the greedy text: the answer ends before it
    got = lm.generate_until([Req(prompt, {"until": [stop], "max_gen_toks": 12}), Req(prompt, {"max_gen_toks": 12})])
    assert got == [full.split(stop)[0], full] and len(ref) == 12
    with pytest.raises(ValueError, match="greedy only"):
        lm.generate_until([Req(prompt, {"do_sample": True, "temperature": 0.7})])
