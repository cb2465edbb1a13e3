"""Multi-turn chat with a trained (or imported) model, streaming the replies.

  python -m gpt_jax.chat --workdir=W [--template=plain|chatml] [--system="..."] [--max_new_tokens=200]
                         [--temperature=0.8 --top_k=50 --top_p=0.95 --seed=0] [--kv_int8]

Commands: /reset, /system <text>, /params temperature=0.7 top_p=0.9 ..., /image PATH, /quit.
Multimodal runs (model.family='vlm'): `/image digit.png` attaches a picture to the next message (repeat it
for several, in order; a question without `<image>` placeholders gets one per picture put before it), e.g.
  /image a.png
  /image b.png
  which is larger, the first or the second?
Each message is answered on its own, greedily by default (see gpt_jax.chat_session). When stdin is not a
terminal it reads one user turn per line and prints each reply on its own line(s), so scripts and
tests can drive it; input must be UTF-8, and a line that fails (a bad command or value, bytes that are
not UTF-8) is reported on stderr with its line number and makes the exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from gpt_jax import vlm_run
from gpt_jax.chat_session import PARAMS, ChatSession, run, with_params
from gpt_jax.chat_template import ChatTemplate
from gpt_jax.cli import flags
from gpt_jax.compression import kv_int8
from gpt_jax.safety import Safety, guard_session
from gpt_jax.workdir import load_run

USAGE = "usage: python -m gpt_jax.chat --workdir=W [--template=plain|chatml] [--system=...] [--temperature=0.8 ...]"
SPEC = [
    flags.Flag("workdir", help="a run directory written by gpt_jax.main or gpt_jax.finetune", required=True),
    flags.Flag("template", str, "plain", "chat template: plain | chatml"),
    flags.Flag("system", str, "", "system prompt"),
    *[flags.Flag(name, str, None, f"sampling: {name}") for name in PARAMS],  # validated by with_params
    flags.Flag(
        "banned_words_file", str, None, "words/phrases and re:<regex> lines kept out of replies (gpt_jax.safety)"
    ),
    flags.Flag("redact_pii", bool, False, "redact e-mails, phone numbers and long ID-like numbers in replies"),
    flags.Flag("kv_int8", bool, False, "decode with an int8 KV cache (GPT text runs; gpt_jax.compression.kv_int8)"),
]


def _lines(stdin: TextIO, interactive: bool):
    if interactive:
        print("you> ", end="", flush=True)
    yield from stdin


def chat(argv: Sequence[str]) -> int:
    _, values = flags.parse(argv, SPEC, usage=USAGE)
    safety = Safety.from_flags(values["banned_words_file"], redact_pii=values["redact_pii"])  # before loading
    template = ChatTemplate.named(values["template"])
    if vlm_run.is_multimodal(values["workdir"]):
        if values["kv_int8"]:
            raise ValueError("--kv_int8 applies to GPT text runs, not multimodal ones: drop --kv_int8")
        run_ = vlm_run.load_vlm_run(values["workdir"])
        session = ChatSession(run_.model_cfg, run_.params, run_.tokenizer, template, vlm=run_)
        session.options = {"temperature": 0.0, "max_new_tokens": 8, "seed": 0}  # answers: greedy, short
    else:
        _, model_cfg, params, tokenizer = load_run(values["workdir"])
        model_cfg = kv_int8.for_flag(model_cfg, values["kv_int8"])
        session = ChatSession(model_cfg, params, tokenizer, template, system=values["system"])
    session.options = with_params(session.options, [f"{k}={values[k]}" for k in PARAMS if values[k] is not None])
    guard_session(session, safety)
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat: /reset, /system <text>, /params k=v ..., /image PATH, /quit", flush=True)
    # Bytes, decoded line by line: a non-UTF-8 line is reported with its offset, not mangled.
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    failed = run(session, _lines(stdin, interactive), sys.stdout, interactive, err=sys.stderr)
    return 1 if failed and not interactive else 0  # a script learns that some of its lines failed


def main(argv: Sequence[str]) -> int:
    return flags.run(chat, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
