"""`python -m gpt_jax.serve`: a trained workdir served through the CLI's build (load_run once), and flags
refused with one line before anything is loaded."""

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")


def test_build_serves_a_trained_workdir(tiny_run):
    from gpt_jax.cli import serve as serve_cli
    from gpt_jax.serving.app import create_app
    from gpt_jax.serving.runner import Background

    _, workdir, _ = tiny_run
    _, values = serve_cli.flags.parse([f"--workdir={workdir}", "--slots=2", "--chunk=4"], serve_cli.SPEC, usage="")
    svc = serve_cli.build(values)
    try:
        assert svc.limits.window == svc.cfg.block_size == 32  # capped at the learned position table
        assert svc.name == workdir.name and svc.template.stop == "\nUser:"
        with Background(create_app(svc)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            r = client.completions.create(model=svc.name, prompt="ROMEO:", max_tokens=8, temperature=0)
            assert r.usage.completion_tokens == 8 and len(r.choices[0].text) == 8  # char tokenizer
            chat = client.chat.completions.create(
                model=svc.name, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
            assert chat.choices[0].message.role == "assistant"
    finally:
        svc.close()


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--slots=0", "--slots=0 must be >= 1"),
        ("--banned_words_file=/nonexistent/words.txt", "not found"),
        ("--banned_action=shout", "--banned_action='shout' must be one of"),
        ("--moderation_hook=nomodule", "must be module:function"),
        ("--bogus=1", "unknown flag --bogus"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flag, message):
    from gpt_jax.cli import serve as serve_cli

    assert serve_cli.main([f"--workdir={tmp_path}", flag]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
