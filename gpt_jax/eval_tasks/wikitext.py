"""WikiText-2 test perplexity as lm-eval's `wikitext` task computes it, on <data>/wikitext2/wiki.test.raw.

- documents: the file cut at top-level headings (" = Title = "), as EleutherAI/wikitext_document_level
  (the dataset lm-eval loads) cuts it: 62 documents;
- each document is detokenized (lm-eval's wikitext_detokenizer) and scored whole with lm-eval's
  rolling windows (get_rolling_token_windows with context_len=1, made disjoint): the first window
  starts from the prefix token (eos, else id 0), the next ones each predict max_length - 1 new tokens;
- word_perplexity = exp(-sum log p / sum words), words = len(re.split(r"\\s+", page)) of the ORIGINAL page
  (as the GPT-2 paper normalises); byte_perplexity likewise over UTF-8 bytes of the original page;
  bits_per_byte = -sum log p / sum bytes / ln 2; token_perplexity per scored token of this tokenizer.
"""

from __future__ import annotations

import math
import re

from gpt_jax.data.sources import require_manual_files
from gpt_jax.eval_tasks.base import EvalOptions, EvalTask, check_limit, encode, prefix_id, unencodable

RELATIVE_PATH = "wikitext2/wiki.test.raw"


def documents(text: str) -> list[str]:
    """Pages: a new one starts at each line that is a top-level heading once '= =' runs are joined."""
    pages, lines = [], []
    for line in text.split("\n"):
        joined = line.replace("= = =", "===").replace("= =", "==").strip()
        if joined.startswith("= ") and joined.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    pages.append("\n".join(lines))
    return pages


_SUBS = [  # lm-eval's wikitext_detokenizer, in its order: (regex?, pattern, replacement)
    (False, "s '", "s'"),
    (True, r"/' [0-9]/", r"/'[0-9]/"),
    (False, " @-@ ", "-"),
    (False, " @,@ ", ","),
    (False, " @.@ ", "."),
    *[(False, f" {p} ", f"{p} ") for p in ":;.!?,"],
    (True, r"\(\s*([^\)]*?)\s*\)", r"(\1)"),
    (True, r"\[\s*([^\]]*?)\s*\]", r"[\1]"),
    (True, r"{\s*([^}]*?)\s*}", r"{\1}"),
    (True, r"\"\s*([^\"]*?)\s*\"", r'"\1"'),
    (True, r"'\s*([^']*?)\s*'", r"'\1'"),
    (False, "= = = =", "===="),
    (False, "= = =", "==="),
    (False, "= =", "=="),
    (False, " \u00b0 ", "\u00b0"),
    (False, " \n", "\n"),
    (False, "\n ", "\n"),
    (False, " N ", " 1 "),
    (False, " 's", "'s"),
]


def detokenize(page: str) -> str:
    for regex, pattern, replacement in _SUBS:
        page = re.sub(pattern, replacement, page) if regex else page.replace(pattern, replacement)
    return page


def rolling_windows(tokens: list[int], prefix: int, max_seq_len: int) -> list[tuple[list[int], list[int]]]:
    """(context, predicted) pairs covering every token once: lm-eval's get_rolling_token_windows(
    context_len=1) through make_disjoint_window. Each pair is at most max_seq_len + 1 tokens."""
    if not tokens:
        return []
    first = min(max_seq_len, len(tokens))
    out = [([prefix], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_seq_len)
        end = done + n
        context = tokens[end - max_seq_len - 1 : end - 1]
        out.append((context[: len(context) - (n - 1)], tokens[end - n : end]))
        done = end
    return out


def load_pages(options: EvalOptions) -> list[str]:
    check_limit(options.limit)
    base = require_manual_files("wikitext2", [RELATIVE_PATH], options.data_dir)
    pages = documents((base / RELATIVE_PATH).read_text(encoding="utf-8"))
    return pages[: options.limit] if options.limit else pages


def page_loglikelihoods(scorer, tok, pages: list[str], skip: bool) -> tuple[list[int], list[float], int]:
    """(indices of the pages scored, their summed log-likelihoods, tokens scored)."""
    prefix, windows, owner, kept = prefix_id(tok), [], [], []
    for i, page in enumerate(pages):
        try:
            ids = encode(tok, detokenize(page))
        except ValueError as e:
            if skip:
                continue
            raise unencodable(f"WikiText-2 document {i}", e) from None
        mine = rolling_windows(ids, prefix, scorer.max_length - 1)
        windows += mine
        owner += [len(kept)] * len(mine)
        kept.append(i)
    sums = [0.0] * len(kept)
    for k, (ll, _) in zip(owner, scorer.loglikelihoods(windows)):
        sums[k] += ll
    return kept, sums, sum(len(cont) for _, cont in windows)


def metrics(pages: list[str], lls: list[float], tokens: int) -> dict:
    ll = sum(lls)
    words = sum(len(re.split(r"\s+", p)) for p in pages)
    nbytes = sum(len(p.encode("utf-8")) for p in pages)
    return {
        "word_perplexity": math.exp(-ll / words),
        "byte_perplexity": math.exp(-ll / nbytes),
        "bits_per_byte": -ll / nbytes / math.log(2),
        "token_perplexity": math.exp(-ll / max(tokens, 1)),
        "words": words,
        "bytes": nbytes,
        "tokens": tokens,
    }


def run(scorer, tok, options: EvalOptions) -> dict:
    pages = load_pages(options)
    kept, lls, tokens = page_loglikelihoods(scorer, tok, pages, options.skip_unencodable)
    if not kept:
        raise ValueError("no WikiText-2 document could be encoded by this tokenizer; nothing to score")
    scored = [pages[i] for i in kept]
    return {
        "task": "wikitext2",
        "documents": len(kept),
        "skipped": len(pages) - len(kept),
        **metrics(scored, lls, tokens),
    }


TASK = EvalTask(
    "wikitext2", "WikiText-2 test: word/byte perplexity and bits per byte (lm-eval's wikitext definitions)", run
)
