"""HellaSwag zero-shot as lm-eval scores it, on the staged rows (<data>/hellaswag/hellaswag_val_preprocessed.jsonl,
10,042 rows of {ctx, endings[4], label}; lm-eval's preprocessing already applied).

Per row, four requests (ctx, " " + ending), tokenized as lm-eval's TemplateLM does (trailing spaces of the
context move to the continuation; the continuation's ids are those of encode(ctx + cont) past encode(ctx)).
acc: argmax of the summed log-probs is the label. acc_norm: argmax of log-prob / len(ending), len in
characters of the choice string as lm-eval's `completion_len` (its byte-length variant is acc_bytes).
"""

from __future__ import annotations

from gpt_jax.data.sources import require_manual_files
from gpt_jax.eval_tasks.base import EvalOptions, EvalTask, check_limit, encode, read_jsonl, unencodable

RELATIVE_PATH = "hellaswag/hellaswag_val_preprocessed.jsonl"


def load_rows(options: EvalOptions) -> list[dict]:
    check_limit(options.limit)
    base = require_manual_files("hellaswag", [RELATIVE_PATH], options.data_dir)
    return read_jsonl(base / RELATIVE_PATH, options.limit)


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's TemplateLM._encode_pair for a causal model."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole, ctx = encode(tok, context + continuation), encode(tok, context)
    return ctx, whole[len(ctx) :]


def requests(tok, rows: list[dict], skip: bool) -> tuple[list[dict], list[tuple[list[int], list[int]]]]:
    """(rows kept, their 4 pairs each, in row order)."""
    kept, pairs = [], []
    for i, row in enumerate(rows):
        try:
            mine = [encode_pair(tok, row["ctx"], " " + e) for e in row["endings"]]
        except ValueError as e:
            if skip:
                continue
            raise unencodable(f"HellaSwag row {i} (idx {row.get('idx')})", e) from None
        kept.append(row)
        pairs += mine
    return kept, pairs


def argmax(xs) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))  # the first of ties, as np.argmax


def metrics(rows: list[dict], lls: list[float]) -> dict:
    acc = acc_norm = 0
    at = 0
    for row in rows:
        k = len(row["endings"])
        mine = lls[at : at + k]
        at += k
        acc += argmax(mine) == int(row["label"])
        acc_norm += argmax([ll / len(e) for ll, e in zip(mine, row["endings"])]) == int(row["label"])
    n = max(len(rows), 1)
    return {"acc": acc / n, "acc_norm": acc_norm / n}


def run(scorer, tok, options: EvalOptions) -> dict:
    rows = load_rows(options)
    kept, pairs = requests(tok, rows, options.skip_unencodable)
    if not kept:
        raise ValueError("no HellaSwag row could be encoded by this tokenizer; nothing to score")
    lls = [ll for ll, _ in scorer.loglikelihoods(pairs)]
    return {"task": "hellaswag", "rows": len(kept), "skipped": len(rows) - len(kept), **metrics(kept, lls)}


TASK = EvalTask("hellaswag", "HellaSwag validation, zero-shot: acc and acc_norm (lm-eval's definitions)", run)
