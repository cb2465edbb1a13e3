"""gpt_jax.eval_tasks: WikiText-2's document split and detokenizer, lm-eval's rolling windows, HellaSwag's
request encoding and metrics, the batched scorer (against a plain per-pair computation, with a fixed
number of compiled programs), and `gpt_jax.evaluate --task=...` on a trained workdir."""

import json
import math
import os
import pathlib

import numpy as np
import pytest

from gpt_jax.eval_tasks import hellaswag, wikitext
from gpt_jax.eval_tasks.base import EvalOptions

DATA = pathlib.Path(os.environ.get("GPT_JAX_DATA_DIR", pathlib.Path(__file__).parents[2] / "shared" / "data"))


def test_wikitext_documents_and_detokenizer():
    text = (DATA / wikitext.RELATIVE_PATH).read_text(encoding="utf-8")
    pages = wikitext.documents(text)
    # EleutherAI/wikitext_document_level's test split: 62 pages; only the blank first line is dropped
    assert len(pages) == 62 and "\n".join(pages) == text[2:]
    assert pages[0].startswith(" = Robert Boulter = \n") and pages[1].startswith(" = Du Fu = ")
    assert wikitext.detokenize("a @-@ b @,@ c ( x ) = = T = = 's") == "a-b,c (x) == T =='s"
    lm_eval = pytest.importorskip("lm_eval.tasks.wikitext.preprocess_wikitext")
    assert all(wikitext.detokenize(p) == lm_eval.wikitext_detokenizer({"page": p}) for p in pages)


def test_rolling_windows_are_lm_evals():
    utils = pytest.importorskip("lm_eval.utils")
    for n in (1, 5, 16, 17, 100):
        for max_seq_len in (1, 4, 16):
            tokens = list(range(10, 10 + n))
            ref = [utils.make_disjoint_window(w) for w in utils.get_rolling_token_windows(tokens, 7, max_seq_len, 1)]
            got = wikitext.rolling_windows(tokens, 7, max_seq_len)
            assert got == [tuple(map(list, w)) for w in ref], (n, max_seq_len)
            assert [t for _, cont in got for t in cont] == tokens  # every token predicted exactly once


def test_hellaswag_requests_and_metrics():
    from gpt_jax.data.tokenizers.byte import ByteTokenizer

    tok = ByteTokenizer()
    ctx, cont = hellaswag.encode_pair(tok, "A man  ", "x")  # trailing spaces move to the continuation
    assert bytes(ctx) == b"A man" and bytes(cont) == b"  x"
    rows = [{"ctx": "c", "label": 1, "endings": ["a", "bbbbbbbbbb", "cc", "d"]}]
    # acc: raw sums (ending 0 wins); acc_norm: per character of the ending (ending 1: -0.9 / 10)
    assert hellaswag.metrics(rows, [-0.5, -0.9, -3.0, -2.0]) == {"acc": 0.0, "acc_norm": 1.0}
    assert hellaswag.metrics(rows, [-1.0, -1.0, -1.0, -1.0])["acc"] == 0.0  # a tie: the first, as np.argmax


@pytest.fixture(scope="module")
def tiny():
    """A random-init 2-layer byte model (weights scaled x5 so its choices are not near-uniform)."""
    import flax.linen as nn
    import jax

    from gpt_jax.config import ModelConfig
    from gpt_jax.data.tokenizers.byte import ByteTokenizer
    from gpt_jax.model import init_params

    cfg = ModelConfig(vocab_size=256, block_size=128, n_layer=2, n_head=2, n_embd=32)
    params = jax.jit(lambda k: jax.tree.map(lambda x: x * 5, nn.meta.unbox(init_params(cfg, k))))(jax.random.key(1))
    return cfg, params, ByteTokenizer()


def test_scorer_matches_a_plain_forward_pass_and_compiles_per_bucket(tiny):
    import jax

    from gpt_jax.eval_tasks.scoring import Scorer, score_rows_jit
    from gpt_jax.model import GPT

    cfg, params, _ = tiny
    rng = np.random.default_rng(0)
    pairs = [(list(rng.integers(0, 256, c)), list(rng.integers(0, 256, k))) for c, k in rng.integers(1, 70, (40, 2))]
    pairs.append((list(range(200)), [5, 6, 7]))  # longer than the window: left-truncated
    before = score_rows_jit._cache_size()
    got = Scorer(cfg, params, window=64, batch_tokens=256).loglikelihoods(pairs)
    assert score_rows_jit._cache_size() - before <= 3  # buckets 16, 32, 64: not one program per request
    # reference: every pair's kept tokens right-padded to 64 in one plain forward pass (causal: padding
    # after a sequence does not change its log-probs), summed on the host in float64
    kept = [(ctx + cont)[-63:] for ctx, cont in pairs]
    ids = np.zeros((len(kept), 64), np.int32)
    for i, k in enumerate(kept):
        ids[i, : len(k)] = k
    logp = np.asarray(jax.jit(lambda x: jax.nn.log_softmax(GPT(cfg).apply({"params": params}, x), -1))(ids))
    for i, ((_, cont), (ll, greedy)) in enumerate(zip(pairs, got)):
        k = kept[i]
        scored = [t for t in range(len(k) - len(cont), len(k)) if t >= 1]
        assert ll == pytest.approx(sum(float(logp[i, t - 1, k[t]]) for t in scored), rel=1e-5, abs=1e-4)
        assert greedy == all(int(np.argmax(logp[i, t - 1])) == k[t] for t in scored)


def test_wikitext_metrics_definitions():
    pages = ["a b\nc", "d"]  # 3 + 1 words, 5 + 1 bytes
    m = wikitext.metrics(pages, [-3.0, -1.0], tokens=8)
    assert m["word_perplexity"] == pytest.approx(math.exp(4 / 4))
    assert m["bits_per_byte"] == pytest.approx(4 / 6 / math.log(2))
    assert m["byte_perplexity"] == pytest.approx(math.exp(4 / 6)) and m["token_perplexity"] == pytest.approx(
        math.exp(0.5)
    )


def test_evaluate_cli_tasks(tiny_run, capsys):
    from gpt_jax.cli import evaluate as cli

    _, workdir, _ = tiny_run
    assert cli.main([f"--workdir={workdir}", "--task=hellaswag", "--limit=6", "--skip_unencodable"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "hellaswag" and out["rows"] + out["skipped"] == 6 and 0 <= out["acc"] <= 1
    assert out["window"] == 32  # capped at the learned position table
    # the char model cannot encode WikiText-2's digits: one line naming the fix, exit code 2
    assert cli.main([f"--workdir={workdir}", "--task=wikitext2", "--limit=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: WikiText-2 document 0") and "--skip_unencodable" in err and "\n" not in err
    assert cli.main([f"--workdir={workdir}", "--task=nope"]) == 2
    assert "unknown --task='nope'" in capsys.readouterr().err


def test_options_refused():
    with pytest.raises(ValueError, match="--limit=-1"):
        hellaswag.load_rows(EvalOptions(limit=-1))
    with pytest.raises(FileNotFoundError, match="hellaswag"):
        hellaswag.load_rows(EvalOptions(data_dir="/nonexistent"))
