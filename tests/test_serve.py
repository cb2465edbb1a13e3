"""The OpenAI-compatible server on 127.0.0.1, driven by the real `openai` client and raw httpx: completions,
chat, streaming, n > 1, stop, seed, logprobs, echo scoring, bad input, disconnects, and a fixed number of
compiled programs across requests of many lengths. One random-init tiny model (block 128) serves them all."""

import dataclasses
import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

PROMPT = "ROMEO:\nWhat light"


def tiny_service(**kw):
    """A random-init 2-layer model (block 128) over a printable-ASCII char tokenizer: no training needed
    for API behaviour (tests/test_serve_cli.py serves a trained workdir)."""
    import string

    import flax.linen as nn
    import jax

    from gpt_jax.config import ModelConfig
    from gpt_jax.data.tokenizers.char import CharTokenizer
    from gpt_jax.model import init_params
    from gpt_jax.serving.batcher import Limits
    from gpt_jax.serving.service import Service

    tok = CharTokenizer("".join(sorted(set(string.printable) - set("\t\r\x0b\x0c"))))
    cfg = ModelConfig(vocab_size=tok.vocab_size + 4, block_size=128, n_layer=2, n_head=2, n_embd=32)
    params = nn.meta.unbox(init_params(cfg, jax.random.key(0)))
    limits = kw.pop("limits", Limits(slots=4, window=128, chunk=4))
    return Service("tiny", cfg, params, tok, limits=limits, **{"max_n": 4, **kw})


@pytest.fixture(scope="module")
def served():
    """(service, url, openai client)."""
    from gpt_jax.serving.app import create_app
    from gpt_jax.serving.runner import Background

    svc = tiny_service()
    with Background(create_app(svc)) as url:
        yield svc, url, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    svc.close()


def test_models_and_completion_usage(served):
    svc, _, client = served
    assert [m.id for m in client.models.list().data] == [svc.name]
    r = client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=7, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.choices[0].text
    assert (
        r.usage.prompt_tokens == len(PROMPT)
        and r.usage.completion_tokens == 7
        and r.usage.total_tokens == len(PROMPT) + 7
    )


def test_greedy_matches_generate(served):
    """The batched server's greedy text is gpt_jax.generate's, token for token."""
    from gpt_jax.generation.engine import generate
    from gpt_jax.generation.options import GenerateOptions, undecodable_ids

    svc, _, client = served
    ids = svc.tok.encode(PROMPT)
    ref = generate(
        svc.cfg,
        svc.params,
        [ids],
        GenerateOptions(
            max_new_tokens=20, temperature=0, banned_ids=undecodable_ids(svc.tok.vocab_size, svc.cfg.vocab_size)
        ),
    )[0]
    r = client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=20, temperature=0)
    assert r.choices[0].text == svc.tok.decode(ref)


def test_n_seed_and_list_of_prompts(served):
    svc, _, client = served
    kw = dict(model=svc.name, prompt=PROMPT, max_tokens=24, temperature=1.0, n=3, seed=11)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # same seed, same samples
    assert len({c.text for c in a.choices}) > 1  # but the n choices differ from each other
    other = client.completions.create(**{**kw, "seed": 12})
    assert [c.text for c in other.choices] != [c.text for c in a.choices]
    r = client.completions.create(model=svc.name, prompt=["To be", "or not"], max_tokens=3, n=2, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3] and r.choices[0].text == r.choices[1].text


def test_stop_string(served):
    svc, _, client = served
    full = client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    stop = full[10:12]
    cut = full[: full.index(stop)]
    r = client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop])
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"


def test_logprobs_and_echo_scoring(served):
    """Completion logprobs, and echo + max_tokens=0 (lm-eval's loglikelihood) against the model's own
    log-softmax over the prompt."""
    import jax

    from gpt_jax.model import GPT

    svc, _, client = served
    r = client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == 6 and all(len(t) == 3 for t in lp.top_logprobs)
    for tok, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert v == pytest.approx(max(top.values()), abs=1e-5) and tok in top  # greedy: the top token
    r = client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1, temperature=0)
    got = r.choices[0].logprobs
    assert r.choices[0].text == PROMPT and got.token_logprobs[0] is None and got.top_logprobs[0] is None
    ids = np.asarray(svc.tok.encode(PROMPT))
    logp = jax.nn.log_softmax(GPT(svc.cfg).apply({"params": svc.params}, ids[None]), -1)[0]
    want = [float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)]
    np.testing.assert_allclose(got.token_logprobs[1:], want, atol=1e-4)
    # echo + generation: the prompt's scores, then the new tokens'
    r = client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=2, echo=True, logprobs=1, temperature=0)
    assert r.choices[0].text.startswith(PROMPT) and len(r.choices[0].logprobs.token_logprobs) == len(ids) + 2
    np.testing.assert_allclose(r.choices[0].logprobs.token_logprobs[1 : len(ids)], want, atol=1e-4)


def test_chat_and_streaming(served):
    svc, url, client = served
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(model=svc.name, messages=messages, max_tokens=8, temperature=0)
    whole = r.choices[0].message.content
    assert r.choices[0].message.role == "assistant" and r.usage.completion_tokens <= 8
    stream = client.chat.completions.create(model=svc.name, messages=messages, max_tokens=8, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # completions stream, raw: OpenAI's SSE framing, ending with [DONE]
    body = {"model": svc.name, "prompt": PROMPT, "max_tokens": 9, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert text == client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=9, temperature=0).choices[0].text


@pytest.mark.parametrize(
    "body, status, param",
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        ({"prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens"),
        ({"prompt": 5}, 400, "prompt"),
        ({"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
        ({"prompt": "hi", "model": "gpt-4"}, 404, "model"),
        ({"prompt": "a" * 500}, 400, "prompt"),
        ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "hi", "max_tokens": -3}, 400, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 1000}, 400, "max_tokens"),
        ({"prompt": "hi", "n": 100000}, 400, "n"),
        ({"prompt": "hi", "logprobs": 9}, 400, "logprobs"),
        ({"prompt": "hi", "stop": 3}, 400, "stop"),
        ({"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ],
)
def test_bad_input_is_refused_and_the_server_keeps_serving(served, body, status, param):
    svc, url, client = served
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    r = httpx.post(url + "/v1/completions", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] and err["param"] == param
    assert client.completions.create(model=svc.name, prompt="hi", max_tokens=2).choices[0].text is not None


def test_bad_chat_and_unknown_route(served):
    _, url, _ = served
    for body in (
        {"messages": []},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user", "content": 3}]},
    ):
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=30).status_code == 400
    r = httpx.get(url + "/v1/nothing", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_queue_full_is_429_with_retry_after(served):
    svc, url, client = served
    old = svc.batcher.limits
    svc.batcher.limits = dataclasses.replace(old, max_queue=0)
    try:
        r = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        svc.batcher.limits = old
    assert client.completions.create(model=svc.name, prompt="hi", max_tokens=2).choices


def test_api_key(served):
    from gpt_jax.serving.app import create_app
    from gpt_jax.serving.runner import Background

    svc, _, _ = served
    with Background(create_app(svc, api_key="sekret")) as url:
        assert httpx.get(url + "/v1/models", timeout=30).status_code == 401
        bad = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer nope"}, timeout=30)
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        ok = openai.OpenAI(base_url=url + "/v1", api_key="sekret", max_retries=0)
        assert ok.completions.create(model=svc.name, prompt="hi", max_tokens=2).choices
        assert httpx.get(url + "/", timeout=30).status_code == 200  # the page itself is public; it sends the key


def _wait_idle(svc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while (svc.batcher.busy() or svc.batcher.waiting()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return svc.batcher.busy() == 0


def test_disconnect_mid_stream_frees_the_slot(served):
    svc, url, client = served
    body = {"model": svc.name, "prompt": "x", "max_tokens": 120, "stream": True, "n": 4}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as resp:
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        assert svc.batcher.busy() > 0  # still generating when we hang up
    assert _wait_idle(svc), "the disconnected client's slots were not freed"
    assert client.completions.create(model=svc.name, prompt="hi", max_tokens=2).choices


def test_compilations_stay_fixed_across_lengths_and_settings(served):
    """After one request per prompt bucket, 24 requests of other lengths and sampling settings (some
    concurrent, joining and leaving mid-decode) compile nothing new."""
    import concurrent.futures as cf

    svc, _, client = served
    for n in (5, 20, 40, 100):  # buckets 16, 32, 64, 128
        client.completions.create(model=svc.name, prompt="a" * n, max_tokens=3)
    before = svc.batcher.compilations()  # jax's caches are per process: other tests' models count too

    def one(i):
        rng = np.random.default_rng(i)
        n = int(rng.integers(1, 100))
        kw = dict(temperature=float(rng.choice([0, 0.7, 1.3])), top_p=float(rng.choice([0.5, 1.0])))
        kw["extra_body"] = {"top_k": int(rng.choice([-1, 5]))}  # vLLM's extension, as the openai client sends it
        return client.completions.create(
            model=svc.name, prompt="b" * n, max_tokens=int(rng.integers(1, 128 - n)), seed=i, **kw
        )

    with cf.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(24)))
    assert all(r.choices[0].finish_reason in ("length", "stop") for r in results)
    after = svc.batcher.compilations()
    assert after == before and set(after) == {"step", "insert"}, (before, after)


def test_lm_eval_local_completions_payload(served):
    """lm-eval's local-completions loglikelihood request, as it sends it (token-id prompts, max_tokens=1,
    echo, logprobs=1) and reads it (token_logprobs[ctxlen:-1], greedy iff each equals its top), against
    the model's own scores; and the vLLM tokenizer endpoints it tokenizes through."""
    import jax

    from gpt_jax.model import GPT

    svc, url, _ = served
    assert "eos_token" in httpx.get(url + "/tokenizer_info", timeout=30).json()
    ctx, cont = "ROMEO:\nWhat", " light"
    ids = httpx.post(url + "/tokenize", json={"prompt": ctx + cont, "add_special_tokens": False}, timeout=30).json()[
        "tokens"
    ]
    assert ids == [int(t) for t in svc.tok.encode(ctx + cont)]
    assert httpx.post(url + "/detokenize", json={"tokens": ids}, timeout=30).json()["prompt"] == ctx + cont
    assert httpx.post(url + "/detokenize", json={"tokens": [-1]}, timeout=30).status_code == 400
    body = {
        "model": svc.name,
        "prompt": [ids, ids[:5]],
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }
    out = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
    choice = sorted(out["choices"], key=lambda c: c["index"])[0]
    ctxlen = len(svc.tok.encode(ctx))
    got = sum(choice["logprobs"]["token_logprobs"][ctxlen:-1])
    logp = jax.nn.log_softmax(GPT(svc.cfg).apply({"params": svc.params}, np.asarray(ids)[None]), -1)[0]
    want = sum(float(logp[t - 1, ids[t]]) for t in range(ctxlen, len(ids)))
    assert got == pytest.approx(want, abs=1e-4)
    greedy = all(
        lp == max(top.values())
        for lp, top in zip(
            choice["logprobs"]["token_logprobs"][ctxlen:-1], choice["logprobs"]["top_logprobs"][ctxlen:-1]
        )
    )
    assert greedy == all(int(np.argmax(logp[t - 1])) == ids[t] for t in range(ctxlen, len(ids)))


def test_echo_streams_the_prompt_first(served):
    svc, url, _ = served
    body = {"model": svc.name, "prompt": PROMPT, "max_tokens": 3, "echo": True, "stream": True, "temperature": 0}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["text"] == PROMPT
    assert len("".join(e["choices"][0]["text"] for e in events)) == len(PROMPT) + 3
