"""Output and input safety for serve, sample and chat: banned words/phrases/regular expressions, PII
redaction, and an input moderation hook.

Banned-words file (`--banned_words_file`): one entry per line, `#` starts a comment line.
  a word or phrase   matched case-insensitively at word boundaries
  re:<pattern>       a Python regular expression (case-sensitive; add (?i) for not)
A phrase that is ONE token of the run's tokenizer (with or without a leading space) is banned during
decoding through the banned-ids mask (gpt_jax.generation.processors): it is never produced. Everything
else (multi-token phrases, regexes) is caught in the text: redacted to `[redacted]` (action "redact")
or the reply is cut there and refused (action "refuse": finish_reason "content_filter").

`--redact_pii`: e-mail addresses -> [email], phone numbers -> [phone], ID-like numbers (9+ digits,
optionally grouped by spaces or dashes) -> [id]. Pattern-based: it misses what the patterns do not
describe and may catch other long numbers; it is a filter, not a guarantee.

Streaming: text is shown HOLD characters late, so a match is redacted before any of it is shown.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import re
from collections.abc import Callable

ACTIONS = ("redact", "refuse")
REDACTED = "[redacted]"
REFUSED = "[refused: the reply matched the content filter]"
HOLD = 64  # characters held back while streaming (longer matches may show in part)
PII = (  # in this order: a phone number is not an ID, an ID with more groups is not a phone number
    ("[email]", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
    (
        "[phone]",
        re.compile(
            r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]\d{3,4}(?:[ .-]\d{2,4})?(?![ .-]?\d)(?!\w)"
        ),
    ),
    ("[id]", re.compile(r"(?<![\w-])\d(?:[ -]?\d){8,}(?![\w-])")),
)


def read_banned(path) -> tuple[list[str], list[re.Pattern]]:
    """(phrases, regexes) of a banned-words file; a bad regex is an error naming its line."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"--banned_words_file={path} not found; give a text file, one word/phrase or re:<regex> per line"
        )
    phrases, regexes = [], []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("re:"):
            try:
                regexes.append(re.compile(line[3:]))
            except re.error as e:
                raise ValueError(
                    f"{path}:{number}: bad regular expression {line[3:]!r} ({e}); fix or remove the line"
                ) from None
        else:
            phrases.append(line)
    return phrases, regexes


def load_hook(spec: str) -> Callable[[str], str | None]:
    """`module:function` -> the function (text -> None if fine, else the reason to refuse)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--moderation_hook={spec!r} must be module:function, e.g. mypkg.filters:check")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--moderation_hook={spec!r} cannot be loaded ({e}); check the module is importable") from None


@dataclasses.dataclass(frozen=True)
class Safety:
    phrases: tuple[str, ...] = ()
    regexes: tuple[re.Pattern, ...] = ()
    action: str = "redact"
    redact_pii: bool = False
    moderate_input: bool = False  # refuse prompts that match the banned list
    hook: Callable[[str], str | None] | None = None

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"--banned_action={self.action!r} must be one of {ACTIONS}")

    @classmethod
    def from_flags(cls, banned_words_file=None, action="redact", redact_pii=False, moderate_input=False, hook=None):
        phrases, regexes = read_banned(banned_words_file) if banned_words_file else ([], [])
        return cls(
            tuple(phrases),
            tuple(regexes),
            action,
            bool(redact_pii),
            bool(moderate_input),
            load_hook(hook) if hook else None,
        )

    @property
    def active(self) -> bool:
        return bool(self.phrases or self.regexes or self.redact_pii)

    def patterns(self) -> list[re.Pattern]:
        words = [re.compile(r"(?i)(?<!\w)" + re.escape(p) + r"(?!\w)") for p in self.phrases]
        return words + list(self.regexes)

    def banned_token_ids(self, encode) -> list[int]:
        """Ids of phrases that are one token (bare or after a space): never decoded."""
        ids = set()
        for phrase in self.phrases:
            for form in {phrase, " " + phrase, phrase.lower(), " " + phrase.lower()}:
                try:
                    toks = [int(t) for t in encode(form)]
                except ValueError:  # not encodable with this tokenizer (e.g. a char it lacks): text filter only
                    continue
                if len(toks) == 1:
                    ids.add(toks[0])
        return sorted(ids)

    def check_input(self, text: str) -> str | None:
        """None if the prompt may be served, else the reason it is refused."""
        if self.hook is not None and (reason := self.hook(text)):
            return str(reason)
        if self.moderate_input and any(p.search(text) for p in self.patterns()):
            return "the prompt matches the server's banned-words list"
        return None

    def filter(self, text: str) -> tuple[str, bool]:
        """(text redacted, refused?). Refused: the text up to the first banned match."""
        hits = [m for p in self.patterns() for m in [p.search(text)] if m]
        if hits and self.action == "refuse":
            return text[: min(m.start() for m in hits)], True
        for p in self.patterns():
            text = p.sub(REDACTED, text)
        if self.redact_pii:
            for label, p in PII:
                text = p.sub(label, text)
        return text, False

    def stream_filter(self, text: str, final: bool) -> tuple[str, bool]:
        """What of a growing text may be shown now: filtered, and HOLD characters late unless final."""
        if not self.active:
            return text, False
        shown, refused = self.filter(text)
        if refused or final:
            return shown, refused
        return shown[: max(0, len(shown) - HOLD)], False

    def apply(self, text: str) -> str:
        """A whole reply filtered; refused -> the refusal note (sample, chat)."""
        shown, refused = self.filter(text)
        return REFUSED if refused else shown


def guard_session(session, safety: Safety) -> None:
    """A chat session (gpt_jax.chat_session) under `safety`: single-token banned phrases never sampled,
    each reply filtered whole (so printed once complete). The history keeps the model's own text."""
    if not safety.active:
        return
    if getattr(session, "vlm", None) is None and safety.phrases:
        ids = safety.banned_token_ids(session.tokenizer.encode)
        if ids:
            session.options = {**session.options, "banned_ids": tuple(ids)}
    reply = session.reply
    session.reply = lambda user: iter([safety.apply("".join(reply(user)))])
