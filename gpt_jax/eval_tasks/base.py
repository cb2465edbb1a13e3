"""What an eval task is: a name and `run(scorer, tokenizer, options) -> metrics`, given the scorer of
gpt_jax.eval_tasks.scoring (log-likelihoods of token pairs). Pure Python: importing it loads no JAX."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class LoglikelihoodScorer(Protocol):
    max_length: int  # tokens a (context, continuation) pair keeps

    def loglikelihoods(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]: ...


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    limit: int | None = None  # the first N rows / documents (None: all)
    data_dir: str | None = None  # else $GPT_JAX_DATA_DIR, else <repo>/../shared/data
    skip_unencodable: bool = False  # skip rows the tokenizer cannot encode (else: an error naming the row)


@dataclasses.dataclass(frozen=True)
class EvalTask:
    name: str
    help: str
    run: Callable[[LoglikelihoodScorer, Any, EvalOptions], dict]


def encode(tok, text: str) -> list[int]:
    return [int(t) for t in tok.encode(text)]


def prefix_id(tok) -> int:
    """The token that stands before a document (lm-eval's prefix_token_id): eos, else id 0."""
    eos = getattr(tok, "eos_id", None)
    return int(eos) if eos is not None else 0


def read_jsonl(path: pathlib.Path, limit: int | None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"--limit={limit} must be >= 1 (or 0/unset: every row)")


def unencodable(what: str, e: Exception) -> ValueError:
    return ValueError(f"{what}: {e} Pass --skip_unencodable to score only what the tokenizer can encode.")
