"""presence_penalty / frequency_penalty in /v1/completions with OpenAI's semantics: each step the logit of
token j drops by presence * (c_j > 0) + frequency * c_j, c_j = how often this choice has produced j. Checked
against a plain greedy loop (full forward pass per token) with the same rule; out-of-range values get a 400."""

import jax
import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

PROMPT = "ROMEO:\nWhat light"


def reference(svc, prompt_ids, n, presence, frequency):
    from gpt_jax.model import GPT

    forward = jax.jit(lambda ids: GPT(svc.cfg).apply({"params": svc.params}, ids)[0])
    banned = np.arange(svc.cfg.vocab_size) >= svc.tok.vocab_size  # the service bans undecodable ids
    ids, counts, out = list(prompt_ids), np.zeros(svc.cfg.vocab_size), []
    for _ in range(n):
        row = np.zeros((1, svc.cfg.block_size), np.int32)
        row[0, : len(ids)] = ids
        logits = np.asarray(forward(row)[len(ids) - 1], np.float64)
        logits = logits - presence * (counts > 0) - frequency * counts
        token = int(np.argmax(np.where(banned, -np.inf, logits)))
        counts[token] += 1
        ids.append(token)
        out.append(token)
    return svc.tok.decode(out)


def test_penalties_follow_openai_semantics():
    from test_serve import tiny_service

    from gpt_jax.serving.app import create_app
    from gpt_jax.serving.runner import Background

    svc = tiny_service()
    try:
        with Background(create_app(svc)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

            def complete(**kw):
                r = client.completions.create(model=svc.name, prompt=PROMPT, max_tokens=16, temperature=0, **kw)
                return r.choices[0].text

            plain = complete()
            penalised = complete(frequency_penalty=1.5, presence_penalty=0.5)
            with pytest.raises(openai.BadRequestError, match="presence_penalty"):
                complete(presence_penalty=2.5)
        ids = [int(t) for t in svc.tok.encode(PROMPT)]
        assert plain == reference(svc, ids, 16, 0.0, 0.0)
        assert penalised == reference(svc, ids, 16, 0.5, 1.5)
        assert penalised != plain  # the penalties change what greedy picks on this model
    finally:
        svc.close()
