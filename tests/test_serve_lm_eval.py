"""lm-evaluation-harness runs our model in-process (gpt_jax.serving.lm_eval_lm.GptJaxLM) and over HTTP
(its local-completions against the server, tokenizing through /tokenize): the same HellaSwag rows give
the same per-request loglikelihoods and the same acc / acc_norm."""

import os
import pathlib

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("tenacity")  # lm-eval[api]
pytest.importorskip("fastapi")

DATA = pathlib.Path(os.environ.get("GPT_JAX_DATA_DIR", "../shared/data"))
ROWS = DATA / "hellaswag" / "hellaswag_val_preprocessed.jsonl"


@pytest.mark.skipif(not ROWS.is_file(), reason="staged HellaSwag rows absent")
def test_in_process_and_http_agree():
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from test_serve import tiny_service

    from gpt_jax.serving import lm_eval_lm
    from gpt_jax.serving.app import create_app
    from gpt_jax.serving.runner import Background

    svc = tiny_service()
    include = lm_eval_lm.task_dir(str(DATA))
    try:
        local = lm_eval_lm.GptJaxLM(svc.cfg, svc.params, svc.tok, window=svc.limits.window)
        with Background(create_app(svc)) as url:
            remote = LocalCompletionsAPI(
                base_url=url + "/v1/completions",
                model=svc.name,
                tokenizer_backend="remote",
                max_length=svc.limits.window,  # lm-eval keeps max_length - 1 tokens, as GptJaxLM
                custom_prefix_token_id=local.prefix_token_id,  # a char tokenizer has no eos: GptJaxLM's 0
            )
            pairs = [
                ("Roof shingle removal: A man is sitting on a roof. he", " is ripping level tiles off."),
                ("A b", " c"),
            ]
            reqs = [(p, local.tok_encode(p[0]), local.tok_encode(p[1])) for p in pairs]
            assert local._loglikelihood_tokens(reqs) == remote._loglikelihood_tokens(reqs)  # bit for bit
            # perplexity: the same rolling windows (3 of them at window 128) score the same over HTTP
            doc = [type("Req", (), {"args": ("ROMEO: What light through yonder window breaks? " * 6,)})()]
            assert local.loglikelihood_rolling(doc) == remote.loglikelihood_rolling(doc)
            a = lm_eval_lm.evaluate(local, ["hellaswag_local"], 3, include)
            b = lm_eval_lm.evaluate(remote, ["hellaswag_local"], 3, include)
        assert a == b and a["hellaswag_local"]["sample_len"] == 3, (a, b)
        assert set(a["hellaswag_local"]) >= {"acc,none", "acc_norm,none"}
    finally:
        svc.close()
