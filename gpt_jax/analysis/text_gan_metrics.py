"""Sample diversity for the text GAN's evaluation: BLEU-4 of one sample against the others (self-BLEU,
Zhu et al. 2018, Texygen), on whitespace words. Higher self-BLEU = samples more alike (less diverse).

BLEU here: clipped n-gram precisions for n = 1..4 (orders longer than the hypothesis are left out), their
geometric mean times the brevity penalty against the closest reference length. A zero count at n >= 2 is
floored at 0.1 matches (sacrebleu's "floor" smoothing); no unigram match at all scores 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

MAX_ORDER = 4
FLOOR = 0.1


def ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _bleu(hyp: Sequence[str], ref_counts: list[list[Counter]], ref_lengths: list[int]) -> float:
    if not hyp:
        return 0.0
    log_p = []
    for n in range(1, min(MAX_ORDER, len(hyp)) + 1):
        counts = ngrams(hyp, n)
        clipped = sum(min(c, max((r[n - 1].get(g, 0) for r in ref_counts), default=0)) for g, c in counts.items())
        total = sum(counts.values())
        if clipped == 0 and n == 1:
            return 0.0
        log_p.append(math.log(max(clipped, FLOOR) / total))
    closest = min(ref_lengths, key=lambda r: (abs(r - len(hyp)), r))
    brevity = 1.0 if len(hyp) > closest else math.exp(1 - closest / len(hyp))
    return brevity * math.exp(sum(log_p) / len(log_p))


def bleu(hyp: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Sentence BLEU-4 of the word list `hyp` against the word lists `refs`."""
    ref_counts = [[ngrams(r, n) for n in range(1, MAX_ORDER + 1)] for r in refs]
    return _bleu(hyp, ref_counts, [len(r) for r in refs])


def self_bleu(texts: Sequence[str]) -> float:
    """Mean BLEU-4 of each text against all the others (whitespace-split words)."""
    words = [t.split() for t in texts]
    counts = [[ngrams(w, n) for n in range(1, MAX_ORDER + 1)] for w in words]
    scores = []
    for i, hyp in enumerate(words):
        others = [j for j in range(len(words)) if j != i]
        scores.append(_bleu(hyp, [counts[j] for j in others], [len(words[j]) for j in others]))
    return sum(scores) / len(scores)
