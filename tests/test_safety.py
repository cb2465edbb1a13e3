"""gpt_jax.safety: the banned-words file, redaction/refusal, PII patterns, decode-time banned ids, input
moderation, and the flags in serve (HTTP), sample and chat."""

import io
import sys

import pytest

from gpt_jax.data.tokenizers.char import CharTokenizer
from gpt_jax.safety import HOLD, REDACTED, REFUSED, Safety, guard_session, read_banned


def _file(tmp_path, text):
    p = tmp_path / "banned.txt"
    p.write_text(text)
    return str(p)


def test_banned_file_phrases_regexes_and_errors(tmp_path):
    phrases, regexes = read_banned(_file(tmp_path, "# comment\n\ndarn\nbad word\nre:\\d{3}-x\n"))
    assert phrases == ["darn", "bad word"] and [r.pattern for r in regexes] == ["\\d{3}-x"]
    with pytest.raises(ValueError, match=r"banned.txt:2: bad regular expression"):
        read_banned(_file(tmp_path, "ok\nre:(unclosed\n"))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_banned(tmp_path / "nope.txt")


def test_redact_and_refuse(tmp_path):
    s = Safety.from_flags(_file(tmp_path, "darn\nbad word\nre:\\d{3}-x\n"))
    assert s.filter("Darn it, a BAD WORD and 123-x; darning is fine") == (
        f"{REDACTED} it, a {REDACTED} and {REDACTED}; darning is fine",
        False,
    )
    r = Safety.from_flags(_file(tmp_path, "darn\n"), action="refuse")
    assert r.filter("all good, then darn") == ("all good, then ", True)
    assert r.apply("oh darn") == REFUSED and r.apply("fine") == "fine"


@pytest.mark.parametrize(
    "text, want",
    [
        ("mail jane.doe+x@example.co.uk now", "mail [email] now"),
        ("call +1 415-555-0100 today", "call [phone] today"),
        ("call (020) 7946 0958", "call [phone]"),
        ("id 123456789012 ok", "id [id] ok"),
        ("card 4111 1111 1111 1111.", "card [id]."),
        ("in 1999 we had 12 cats, 3.14159", "in 1999 we had 12 cats, 3.14159"),  # short numbers stay
    ],
)
def test_pii(text, want):
    assert Safety(redact_pii=True).filter(text) == (want, False)
    assert Safety().filter(text) == (text, False)  # off by default


def test_stream_filter_holds_back_until_final():
    s = Safety(redact_pii=True)
    partial = "x" * 10 + " write to bob@exam"
    shown, _ = s.stream_filter(partial, final=False)
    assert "bob" not in shown and len(shown) == max(0, len(partial) - HOLD)
    assert s.stream_filter(partial + "ple.com", final=True) == ("x" * 10 + " write to [email]", False)
    assert Safety().stream_filter("abc", final=False) == ("abc", False)  # inactive: no delay


def test_banned_token_ids_and_moderation(tmp_path):
    tok = CharTokenizer("".join(sorted(set("abcdefgh xyz"))))
    s = Safety.from_flags(_file(tmp_path, "e\nbad\nq\n"), moderate_input=True)
    # "e" is one char token; "bad" is three (text filter only); "q" is not in the vocabulary at all
    assert s.banned_token_ids(tok.encode) == [int(tok.encode("e")[0])]
    assert s.check_input("a bad day") and s.check_input("all fine") is None
    hooked = Safety(hook=lambda text: "no shouting" if text.isupper() else None)
    assert hooked.check_input("HEY") == "no shouting" and hooked.check_input("hey") is None


def test_guard_session_filters_replies():
    from gpt_jax.chat import ChatSession, ChatTemplate, run

    class Canned(ChatSession):
        def reply(self, user):
            self.turns.append((user, "x"))
            yield "write to me@example.com "
            yield "or call 415-555-0100"

    s = Canned(None, None, CharTokenizer("abc"), ChatTemplate.named("plain"))
    guard_session(s, Safety(redact_pii=True))
    out = io.StringIO()
    run(s, ["hi"], out, interactive=False)
    assert out.getvalue() == "write to [email] or call [phone]\n"


def test_sample_cli_bans_and_redacts(tiny_run, tmp_path, monkeypatch, capsys):
    from gpt_jax import sample

    _, workdir, _ = tiny_run
    banned = _file(tmp_path, "e\nre:[aiou]\n")  # "e" is a char token: banned in decoding; the rest redacted
    argv = [f"--workdir={workdir}", "--prompt=ROMEO:", "--max_new_tokens=20", "--temperature=1.5", "--seed=3"]
    assert sample.main(argv + [f"--banned_words_file={banned}", "--num_samples=2"]) == 0
    out = capsys.readouterr().out
    body = out.replace(REDACTED, "")
    assert "ROMEO:" in out and not set("aeiou") & set(body), out
    assert sample.main(argv) == 0  # without the flags the same run does use them (the test can fail)
    assert set("aeiou") & set(capsys.readouterr().out)


def test_server_refuses_redacts_and_moderates(tmp_path):
    """Serve with safety: a refused reply ends with finish_reason content_filter and shows nothing
    banned; moderated prompts are a 400 with code content_policy_violation."""
    from test_serve import tiny_service

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from gpt_jax.serving.app import create_app
    from gpt_jax.serving.runner import Background

    safety = Safety.from_flags(_file(tmp_path, "Q\nre:[a-z]\n"), action="refuse", moderate_input=True)
    svc = tiny_service(safety=safety)
    try:
        q = svc.tok.encode("Q")[0]
        assert bool(svc.batcher.shared.banned_V[q])  # a one-token phrase: banned in decoding
        with Background(create_app(svc)) as url:
            body = {"prompt": "ABC", "max_tokens": 60, "temperature": 1.0, "seed": 0}
            r = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
            choice = r["choices"][0]
            assert choice["finish_reason"] == "content_filter" and not any(c.islower() for c in choice["text"])
            bad = httpx.post(url + "/v1/completions", json={"prompt": "abc"}, timeout=60)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "content_policy_violation"
    finally:
        svc.close()


def test_chat_cli_flags_are_checked_before_loading(tmp_path, capsys, monkeypatch):
    from gpt_jax import chat

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hi\n")))
    assert chat.main([f"--workdir={tmp_path}", "--banned_words_file=/nonexistent.txt"]) == 2
    assert "not found" in capsys.readouterr().err
