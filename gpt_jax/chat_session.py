"""A multi-turn chat session over a trained model: history fitted to the context, streamed replies,
/commands, and the line loop the chat CLI (gpt_jax.cli.chat) and scripts drive.

A multimodal run (`vlm` set: gpt_jax.vlm_run.VLMRun) answers questions about pictures: `/image PATH` reads
a picture (checked and preprocessed at once) and attaches it to the next message, several in order; each
message is one question in the run's own prompt layout (the VQA models are trained on single questions, so
no history and no chat template), answered greedily unless /params says otherwise."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, TextIO

import numpy as np

from gpt_jax import generate as generate_lib  # its `stream`, looked up per call (tests wrap it)
from gpt_jax.chat_template import TEMPLATES, ChatTemplate  # noqa: F401 - re-exported for callers
from gpt_jax.generation.options import GenerateOptions

PARAMS = {
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repetition_penalty": float,
    "max_new_tokens": int,
    "seed": int,
}
# Options that "=none" turns off (their GenerateOptions default is None).
NULLABLE = {f.name for f in dataclasses.fields(GenerateOptions) if f.name in PARAMS and f.default is None}


def with_params(options: dict, pairs: Iterable[str]) -> dict:
    """A copy of `options` with `key=value` pairs applied and checked as generate() checks them: a bad
    key or value is a one-line ValueError, and `options` is left as it was."""
    new = dict(options)
    for kv in pairs:
        key, eq, value = kv.partition("=")
        if key not in PARAMS or not eq:
            raise ValueError(f"/params takes key=value with key in {sorted(PARAMS)}; got {kv!r}")
        if value.lower() == "none" and key in NULLABLE:
            new[key] = None
            continue
        try:
            new[key] = PARAMS[key](value)
        except ValueError:
            kind = "an integer" if PARAMS[key] is int else "a number"
            raise ValueError(f"{key}={value} is not {kind}{' (or none)' if key in NULLABLE else ''}") from None
    GenerateOptions(**new)  # raises naming the value out of range (temperature < 0, top_p > 1, ...)
    return new


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
    vlm: Any = None  # a gpt_jax.vlm_run.VLMRun: questions about pictures attached with /image
    images: list = dataclasses.field(default_factory=list)  # (path, float32 [H, W, C]) for the next message

    def reply_about_images(self, user: str) -> Iterable[str]:
        """The answer to one question about the attached pictures (which it uses up)."""
        if not self.images:
            raise ValueError("this run answers questions about pictures: attach one first with /image PATH")
        images, self.images = self.images, []
        opts = dict(self.options)
        try:
            rows = self.vlm.generate([user], [np.stack([a for _, a in images])], self.vlm.options(**opts))
        except ValueError:
            self.images = images  # a bad question (unknown word, placeholders) keeps the pictures attached
            raise
        self.options["seed"] = int(self.options.get("seed", 0)) + 1
        yield self.vlm.text(rows[0])

    def attach_image(self, path: str) -> str:
        if self.vlm is None:
            raise ValueError("/image needs a multimodal run (model.family='vlm'); this one reads text only")
        path = path.strip()
        if not path:
            raise ValueError("/image takes a file: /image digit.png")
        try:
            (array,) = self.vlm.load_images([path])
        except FileNotFoundError as e:  # a line's error, not the session's end
            raise ValueError(str(e)) from None
        self.images.append((path, array))
        return f"(image {len(self.images)} attached to the next message: {path})"

    def budget(self) -> int | None:
        if self.model_cfg.pos == "rope":
            return None
        return self.model_cfg.block_size - int(self.options["max_new_tokens"])

    def reply(self, user: str) -> Iterable[str]:
        if self.vlm is not None:
            yield from self.reply_about_images(user)
            return
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
        options = GenerateOptions(
            max_new_tokens=n,
            stop_ids=() if eos is None else (eos,),
            stop_strings=(stop,),
            decode=self.tokenizer.decode,
            **opts,
        )
        for toks_1xC in generate_lib.stream(self.model_cfg, self.params, [np.asarray(ids, np.int32)], options):
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
            self.images.clear()
            return "(history cleared)"
        if name == "image":
            return self.attach_image(arg)
        if name == "system":
            self.system, self.turns = arg.strip(), []
            return "(system prompt set; history cleared)"
        if name == "params":
            try:
                options = with_params(self.options, arg.split())
                old, self.options = self.options, options
                if (
                    self.vlm is None
                    and self.model_cfg is not None
                    and (budget := self.budget()) is not None
                    and budget < 1
                ):
                    self.options = old
                    raise ValueError(
                        f"max_new_tokens={options['max_new_tokens']} leaves no room for a prompt in "
                        f"block_size={self.model_cfg.block_size}"
                    )
            except ValueError as e:
                raise ValueError(f"{e}; settings unchanged") from None
            return "(" + " ".join(f"{k}={v}" for k, v in sorted(self.options.items())) + ")"
        raise ValueError(
            f"unknown command /{name}; commands: /reset, /system <text>, /params k=v ..., /image PATH, /quit"
        )


def run(
    session: ChatSession, lines: Iterable[str | bytes], out: TextIO, interactive: bool, err: TextIO | None = None
) -> int:
    """Feed `lines` (str, or bytes: decoded here as UTF-8) to `session`; returns how many lines failed.
    Errors go to `err` (default `out`), one line each; when not interactive, each ends with the input
    line's number."""
    failed = offset = 0
    for number, raw in enumerate(lines, 1):
        start, offset = offset, offset + len(raw)
        try:
            line = (_utf8(raw, start) if isinstance(raw, bytes) else raw).rstrip("\r\n")
            if not line.strip():
                continue
            if line.startswith("/"):
                msg = session.command(line)
                if msg is None:
                    return failed
                print(msg, file=out, flush=True)
                continue
            if interactive:
                print("assistant> ", end="", file=out, flush=True)
            for piece in session.reply(line):
                print(piece, end="", file=out, flush=True)
            print(file=out, flush=True)
        except ValueError as e:
            failed += 1
            print(f"error: {e}{'' if interactive else f' (input line {number})'}", file=err or out, flush=True)
        if interactive:
            print("you> ", end="", file=out, flush=True)
    return failed


def _utf8(raw: bytes, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"byte 0x{raw[e.start]:02x} at offset {offset + e.start} of the input (byte {e.start + 1} of its line) "
            "is not UTF-8; the input must be UTF-8 text: re-encode it with iconv -f <its encoding> -t utf-8"
        ) from None
