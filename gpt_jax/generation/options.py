"""What to generate: one frozen `GenerateOptions`, taken by `generate` and `stream`, validated here.

  GenerateOptions(max_new_tokens=100, temperature=0.8, top_k=50, seed=0)

Every option check lives in this module, as one-line ValueErrors: on construction (each value alone,
and the combinations beam search rules out), `check_ids` (token lists against the model's vocab)
and `check_stream` (what streaming cannot do). Pure Python: importing it loads no JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

PAD_ID = -1  # what rows that stopped hold after their stop token: never a token id
EARLY_STOPPING = (False, True, "never")  # passed to the compiled beam search as its index


def undecodable_ids(tokenizer_vocab: int, model_vocab: int) -> tuple[int, ...]:
    """Ids the model can produce that its tokenizer cannot decode: an objective's sentinels (fim,
    mlm) and vocab padding, which follow the tokenizer's ids. Ban them when sampling text."""
    return tuple(range(int(tokenizer_vocab), int(model_vocab)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    """Everything but the model and the prompts (strategy, filters, stopping, seed, windowing).

    Token lists are stored as tuples of ints and stop_strings as a tuple of str, so options compare
    and hash by value; `replace(**changes)` re-validates.
    """

    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None  # HF/CTRL: seen tokens' logits / p (if > 0) or * p
    num_beams: int = 1  # > 1: beam search (generate only)
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never" (HF semantics)
    stop_ids: Sequence[int] = ()  # a row is done once it produces one (kept in the output)
    stop_strings: Sequence[str] = ()  # checked on the host between streamed chunks; need `decode`
    decode: Callable[[Any], str] | None = None  # ids -> text, for stop_strings
    banned_ids: Sequence[int] = ()  # never produced (see undecodable_ids)
    seed: int = 0
    pad_id: int = PAD_ID
    slide: bool = False  # position-table models: re-encode the last block_size // 2 tokens when full
    chunk: int = 16  # streaming: decode steps per compiled call

    def __post_init__(self):
        if isinstance(self.stop_strings, str):
            s = self.stop_strings
            raise ValueError(f"stop_strings={s!r} must be a list of strings, e.g. [{s!r}]")
        normalized = {
            "max_new_tokens": int(self.max_new_tokens),
            "stop_ids": tuple(int(i) for i in self.stop_ids),
            "banned_ids": tuple(int(i) for i in self.banned_ids),
            "stop_strings": tuple(self.stop_strings),
        }
        for name, value in normalized.items():  # frozen: set once, here
            object.__setattr__(self, name, value)

        def need(ok, problem):
            if not ok:
                raise ValueError(problem)

        need(self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens} must be >= 1")
        need(self.temperature >= 0, f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        need(self.top_k is None or self.top_k >= 1, f"top_k={self.top_k} must be >= 1 (or None: no top-k)")
        need(self.top_p is None or 0 < self.top_p <= 1, f"top_p={self.top_p} must be in (0, 1] (or None)")
        need(self.min_p is None or 0 <= self.min_p <= 1, f"min_p={self.min_p} must be in [0, 1] (or None)")
        need(
            self.repetition_penalty is None or self.repetition_penalty > 0,
            f"repetition_penalty={self.repetition_penalty} must be > 0 (1 = off)",
        )
        need(self.num_beams >= 1, f"num_beams={self.num_beams} must be >= 1 (1 = no beam search)")
        need(
            isinstance(self.early_stopping, bool) or self.early_stopping == "never",
            f"early_stopping={self.early_stopping!r} must be one of {EARLY_STOPPING}",
        )
        need(self.chunk >= 1, f"chunk={self.chunk} must be >= 1")
        need(not self.stop_strings or self.decode is not None, "stop_strings need decode=tokenizer.decode")
        if self.num_beams > 1:
            sampling = [k for k in ("top_k", "top_p", "min_p") if getattr(self, k) is not None]
            need(not sampling, f"beam search is deterministic: drop {', '.join(sampling)} or use num_beams=1")
            need(
                not self.stop_strings,
                "stop_strings are checked between streamed chunks; beam search takes stop_ids only",
            )
            need(not self.slide, "beam search cannot slide its window; shorten the prompt or max_new_tokens")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes) -> GenerateOptions:
        return dataclasses.replace(self, **changes)

    def check_ids(self, vocab: int) -> None:
        """banned_ids and stop_ids must be ids of a `vocab`-token model, and leave a token allowed."""
        for what in ("banned_ids", "stop_ids"):
            ids = getattr(self, what)
            if ids and (min(ids) < 0 or max(ids) >= vocab):
                raise ValueError(f"{what} must be token ids in [0, {vocab}), got {sorted(set(ids))}")
        if len(set(self.banned_ids)) == vocab:
            raise ValueError("banned_ids cover the whole vocabulary; leave at least one token allowed")

    def check_stream(self) -> None:
        if self.num_beams > 1:
            raise ValueError(f"stream() samples only; num_beams={self.num_beams} (beam search) needs generate()")


def check_options(options) -> GenerateOptions:
    """`options` itself, if it is a GenerateOptions (the one argument generate/stream take for it)."""
    if not isinstance(options, GenerateOptions):
        raise TypeError(
            f"options must be a GenerateOptions, e.g. GenerateOptions(max_new_tokens=100, temperature=0.8); "
            f"got {type(options).__name__}"
        )
    return options
