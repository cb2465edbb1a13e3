"""Chat: template rendering, history truncation, /commands, and the non-TTY CLI on a trained run."""

import io
import pathlib
import re
import subprocess
import sys

import pytest

from gpt_jax.chat import ChatSession, ChatTemplate, fit_history, run


def encode(text):
    return list(text)  # one token per character: lengths are easy to reason about


def test_render_plain_template():
    t = ChatTemplate.named("plain")
    assert t.render("Be brief.", [("hi", "hello")], "how?") == (
        "Be brief.\n\nUser: hi\nAssistant: hello\nUser: how?\nAssistant: "
    )
    assert t.render("", [], "x") == "User: x\nAssistant: "


def test_unknown_template_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown chat template 'nope'.*chatml"):
        ChatTemplate.named("nope")


def test_history_drops_oldest_turns_first():
    t = ChatTemplate.named("plain")
    turns = [("first question", "first answer"), ("second", "answer two")]
    full = t.render("sys", turns, "now")
    ids, kept = fit_history(encode, t, "sys", turns, "now", budget=len(full))
    assert kept == turns and "".join(ids) == full
    ids, kept = fit_history(encode, t, "sys", turns, "now", budget=len(full) - 1)
    assert kept == turns[1:] and "".join(ids) == t.render("sys", turns[1:], "now")
    # Nothing but the new message fits: keep its end (the part next to the reply).
    ids, kept = fit_history(encode, t, "sys", turns, "a very long new message", budget=10)
    assert kept == [] and len(ids) == 10 and "".join(ids).endswith("Assistant: "[-10:])


class _Session(ChatSession):
    """Replies with a canned text, so /commands and the loop are tested without a model."""

    def reply(self, user):
        self.turns.append((user, f"echo {user}"))
        yield "echo "
        yield user


def test_commands_and_loop():
    s = _Session(None, None, None, ChatTemplate.named("plain"))
    out = io.StringIO()
    lines = [
        "hello",
        "/params temperature=0.3 top_p=0.9",
        "/system Be terse.",
        "again",
        "/bogus",
        "/reset",
        "/quit",
        "never read",
    ]
    run(s, lines, out, interactive=False)
    text = out.getvalue().splitlines()
    assert text[0] == "echo hello"
    assert "temperature=0.3" in text[1] and "top_p=0.9" in text[1]
    assert s.system == "Be terse."
    assert text[3] == "echo again"
    assert text[4].startswith("error: unknown command /bogus")
    assert s.turns == [] and "never read" not in out.getvalue()
    with pytest.raises(ValueError, match="key=value"):
        s.command("/params nonsense=1")


@pytest.fixture(scope="module")
def long_block_run(tmp_path_factory, tfds_cache):
    """configs/tiny.py with block_size 128, trained 10 steps: room for a past exchange in the prompt
    (the shared tiny run's 32-token block holds one turn at most)."""
    from gpt_jax import run_config
    from gpt_jax.trainer import train_and_evaluate

    c = run_config.load_config(str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "tiny.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.sample.num_tokens = 0
    c.model.block_size = 128
    c.train.num_steps = c.train.eval_every = c.checkpoint.every = 10
    c.train.eval_batches = 1
    workdir = tmp_path_factory.mktemp("chat_run")
    train_and_evaluate(c, workdir)
    return workdir


def test_cli_chats_with_a_trained_run(long_block_run, monkeypatch, capsys):
    """The CLI (chat.main, stdin not a TTY): one reply per user line, /params applied, and history kept
    across turns: the prompt generation gets on turn 2 is turn 1's exchange (as the user saw the reply)
    followed by the new message, rendered by the template."""
    from gpt_jax import chat, generate
    from gpt_jax.data import load_tokenizer

    real_stream, prompts = generate.stream, []

    def spy(model_cfg, params, prompt_rows, *args, **kwargs):
        prompts.append([int(t) for t in prompt_rows[0]])
        return real_stream(model_cfg, params, prompt_rows, *args, **kwargs)

    monkeypatch.setattr(generate, "stream", spy)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Hello there\n/params top_k=5\nAnd then?\n")))
    argv = [f"--workdir={long_block_run}", "--max_new_tokens=12", "--temperature=1", "--seed=0"]
    assert chat.main(argv) == 0
    out = capsys.readouterr().out
    first, params_line, rest = re.match(r"(?s)(.*?)\n(\(.*?\))\n(.*)", out).groups()
    assert "top_k=5" in params_line and rest.endswith("\n"), out
    reply = first.strip()
    assert reply, out  # a non-empty first reply, so its presence below means something
    assert len(prompts) == 2, out  # one generation per user line, none for /params
    decode = load_tokenizer(long_block_run).decode
    template = ChatTemplate.named("plain")
    assert decode(prompts[0]) == template.render("", [], "Hello there")
    assert decode(prompts[1]) == template.render("", [("Hello there", reply)], "And then?")


def test_session_reply_streams_and_records_the_turn(tiny_run):
    from gpt_jax.workdir import load_run

    _, workdir, _ = tiny_run
    _, cfg, params, tok = load_run(workdir)
    s = ChatSession(cfg, params, tok, ChatTemplate.named("plain"))
    s.options.update(temperature=0.0, max_new_tokens=10)
    pieces = list(s.reply("Hi"))
    assert s.turns == [("Hi", "".join(pieces).strip())]
    assert "\nUser:" not in "".join(pieces)
    # block_size 32 - 10 new tokens leaves 22 for the prompt: the first exchange no longer fits
    # beside the second question, so it is dropped (oldest first) rather than overflowing the window.
    assert len(s.template.render("", s.turns, "Hi")) > s.budget() >= len(s.template.render("", [], "Hi"))
    again = "".join(s.reply("Hi"))
    assert s.turns == [("Hi", again.strip())]


def test_bad_cli_flags_are_one_line_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "gpt_jax.chat", "--workdir=/nonexistent", "--colour=red"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: unknown flag --colour;")
    assert len(proc.stderr.strip().splitlines()) == 1
