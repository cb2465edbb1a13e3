"""Multi-turn chat with a trained (or imported) model, streaming the replies.

  python -m gpt_jax.chat --workdir=W [--template=plain|chatml] [--system="..."] [--max_new_tokens=200]
                         [--temperature=0.8 --top_k=50 --top_p=0.95 --seed=0]

Commands: /reset, /system <text>, /params temperature=0.7 top_p=0.9 ..., /quit. When stdin is not a
terminal it reads one user turn per line and prints each reply on its own line(s), so scripts and
tests can drive it.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Iterable, TextIO

import numpy as np

# name -> (system block, user turn, assistant prefix, end of an assistant turn, stop string). The
# stop string ends a reply: the model closes its turn or starts the next user turn by itself.
TEMPLATES: dict[str, tuple[str, str, str, str, str]] = {
    "plain": ("{system}\n\n", "User: {text}\n", "Assistant: ", "\n", "\nUser:"),
    "chatml": (
        "<|im_start|>system\n{system}<|im_end|>\n",
        "<|im_start|>user\n{text}<|im_end|>\n",
        "<|im_start|>assistant\n",
        "<|im_end|>\n",
        "<|im_end|>",
    ),
}
PARAMS = {
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repetition_penalty": float,
    "max_new_tokens": int,
    "seed": int,
}


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    system: str
    user: str
    assistant: str
    end: str
    stop: str

    @classmethod
    def named(cls, name: str) -> ChatTemplate:
        if name not in TEMPLATES:
            raise ValueError(f"unknown chat template {name!r}; choose one of {sorted(TEMPLATES)}")
        return cls(*TEMPLATES[name])

    def render(self, system: str, turns: list[tuple[str, str]], user: str) -> str:
        """The prompt for the next reply: system block, past (user, reply) turns, the new user turn."""
        text = self.system.format(system=system) if system else ""
        for u, a in turns:
            text += self.user.format(text=u) + self.assistant + a + self.end
        return text + self.user.format(text=user) + self.assistant


def fit_history(encode, template: ChatTemplate, system: str, turns, user: str, budget: int):
    """Prompt ids that fit in `budget` tokens: drop the oldest turns first, then cut the new message
    from the left. Returns (ids, turns_kept)."""
    turns = list(turns)
    while True:
        ids = encode(template.render(system, turns, user))
        if len(ids) <= budget:
            return ids, turns
        if turns:
            turns.pop(0)
        elif system:
            system = ""
        else:
            return ids[-budget:], turns


@dataclasses.dataclass
class ChatSession:
    """State of one conversation; `reply` streams text pieces of the assistant's answer."""

    model_cfg: Any
    params: Any
    tokenizer: Any
    template: ChatTemplate
    system: str = ""
    options: dict = dataclasses.field(
        default_factory=lambda: {"temperature": 0.8, "top_k": 50, "max_new_tokens": 200, "seed": 0}
    )
    turns: list = dataclasses.field(default_factory=list)

    def budget(self) -> int | None:
        if self.model_cfg.pos == "rope":
            return None
        return self.model_cfg.block_size - int(self.options["max_new_tokens"])

    def reply(self, user: str) -> Iterable[str]:
        from gpt_jax.generate import stream

        opts = dict(self.options)
        n = int(opts.pop("max_new_tokens"))
        budget = self.budget()
        if budget is not None and budget < 1:
            raise ValueError(
                f"max_new_tokens={n} leaves no room for a prompt in block_size={self.model_cfg.block_size}; lower it with /params max_new_tokens=..."
            )
        encode = self.tokenizer.encode
        ids, self.turns = fit_history(encode, self.template, self.system, self.turns, user, budget or 1 << 30)
        eos = getattr(self.tokenizer, "eos_id", None)
        stop = self.template.stop
        new: list[int] = []
        shown, text = "", ""
        for toks_1xC in stream(
            self.model_cfg,
            self.params,
            [np.asarray(ids, np.int32)],
            max_new_tokens=n,
            stop_ids=() if eos is None else (eos,),
            stop_strings=(stop,),
            decode=self.tokenizer.decode,
            **opts,
        ):
            new += [int(t) for t in toks_1xC[0] if t >= 0 and t != eos]
            text = self.tokenizer.decode(new).split(stop)[0]
            # Hold back what may be the start of the stop string or of a multi-byte character.
            safe = text[: max(0, len(text) - len(stop) + 1)].rstrip("\ufffd")
            if len(safe) > len(shown):
                yield safe[len(shown) :]
                shown = safe
        text = text.rstrip("\ufffd")
        if len(text) > len(shown):
            yield text[len(shown) :]
        self.turns.append((user, text.strip()))
        self.options["seed"] = int(self.options.get("seed", 0)) + 1  # a new draw each turn, reproducible

    def command(self, line: str) -> str | None:
        """Apply a /command; returns a message for the user, or None to quit."""
        name, _, arg = line[1:].partition(" ")
        if name == "quit":
            return None
        if name == "reset":
            self.turns.clear()
            return "(history cleared)"
        if name == "system":
            self.system, self.turns = arg.strip(), []
            return "(system prompt set; history cleared)"
        if name == "params":
            for kv in arg.split():
                key, eq, value = kv.partition("=")
                if key not in PARAMS or not eq:
                    raise ValueError(f"/params takes key=value with key in {sorted(PARAMS)}; got {kv!r}")
                self.options[key] = None if value.lower() == "none" else PARAMS[key](value)
            return "(" + " ".join(f"{k}={v}" for k, v in sorted(self.options.items())) + ")"
        raise ValueError(f"unknown command /{name}; commands: /reset, /system <text>, /params k=v ..., /quit")


def run(session: ChatSession, lines: Iterable[str], out: TextIO, interactive: bool) -> None:
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        try:
            if line.startswith("/"):
                msg = session.command(line)
                if msg is None:
                    return
                print(msg, file=out, flush=True)
                continue
            if interactive:
                print("assistant> ", end="", file=out, flush=True)
            for piece in session.reply(line):
                print(piece, end="", file=out, flush=True)
            print(file=out, flush=True)
        except ValueError as e:
            print(f"error: {e}", file=out, flush=True)
        if interactive:
            print("you> ", end="", file=out, flush=True)


def _lines(stdin: TextIO, interactive: bool):
    if interactive:
        print("you> ", end="", flush=True)
    yield from stdin


def main(argv: list[str]) -> int:
    flags = {}
    for a in argv:
        if not a.startswith("--") or "=" not in a:
            print(f"error: arguments are --key=value; got {a!r}. {__doc__.splitlines()[2].strip()}", file=sys.stderr)
            return 2
        k, v = a[2:].split("=", 1)
        flags[k] = v
    allowed = {"workdir", "template", "system"} | set(PARAMS)
    unknown = sorted(set(flags) - allowed)
    if unknown or "workdir" not in flags:
        print(
            f"error: {'unknown flag(s) ' + str(unknown) if unknown else '--workdir is required'}; "
            f"flags: {sorted(allowed)}",
            file=sys.stderr,
        )
        return 2
    try:
        from gpt_jax.workdir import load_run

        _, model_cfg, params, tokenizer = load_run(flags.pop("workdir"))
        session = ChatSession(
            model_cfg,
            params,
            tokenizer,
            ChatTemplate.named(flags.pop("template", "plain")),
            system=flags.pop("system", ""),
        )
        for k, v in flags.items():
            session.options[k] = None if v.lower() == "none" else PARAMS[k](v)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat: /reset, /system <text>, /params k=v ..., /quit", flush=True)
    run(session, _lines(sys.stdin, interactive), sys.stdout, interactive)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
