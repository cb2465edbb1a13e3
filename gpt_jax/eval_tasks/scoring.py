"""Batched, jitted log-likelihoods of (context, continuation) token pairs: what every eval task scores.

Truncation follows lm-eval's API models (and so gpt_jax.serving.lm_eval_lm and the server's echo path):
a pair keeps its last `window - 1` tokens. The model reads the kept tokens but the last, padded on the
right to a power-of-two bucket (16, 32, ... window); each bucket has a fixed row count (about
`batch_tokens` tokens a call), so the number of compiled programs is the number of buckets used, never
the number of requests. The sum and the greedy flag are reduced on the device: one float and one bool
come back per request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.config import ModelConfig
from gpt_jax.model import GPT

Pair = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)


def bucket(n: int, cap: int) -> int:
    """Powers of two from 16, capped at `cap`."""
    return min(max(16, 1 << (max(n, 1) - 1).bit_length()), cap)


def score_rows(cfg: ModelConfig, params, inputs_BxP, targets_BxP, mask_BxP):
    """(sum of log p(target) over masked positions [B], whether every masked target is the argmax [B])."""
    logits_BxPxV = GPT(cfg).apply({"params": params}, inputs_BxP).astype(jnp.float32)
    logz_BxP = jax.nn.logsumexp(logits_BxPxV, axis=-1)
    picked_BxP = jnp.take_along_axis(logits_BxPxV, targets_BxP[..., None], axis=-1)[..., 0]
    lp_BxP = picked_BxP - logz_BxP
    hit_BxP = jnp.argmax(logits_BxPxV, axis=-1) == targets_BxP
    return jnp.sum(jnp.where(mask_BxP, lp_BxP, 0.0), axis=1), jnp.all(hit_BxP | ~mask_BxP, axis=1)


score_rows_jit = jax.jit(score_rows, static_argnums=(0,))


@dataclasses.dataclass
class Scorer:
    """log p(continuation | context) for many pairs over one model on one device.

    window: as the server's and the lm-eval adapter's --window (a pair keeps window - 1 tokens);
    capped at block_size for position-table models. batch_tokens: rows per call = batch_tokens // bucket.
    """

    cfg: ModelConfig
    params: object
    window: int
    batch_tokens: int = 8192

    def __post_init__(self):
        if self.cfg.pos != "rope":
            self.window = min(self.window, self.cfg.block_size)
        if self.window < 3:
            raise ValueError(f"window={self.window} must be >= 3 (a context token and a scored one, plus one)")
        device = jax.devices()[0]  # via host: drops a loaded run's mesh shardings
        self.params = jax.tree.map(lambda x: jax.device_put(np.asarray(x), device), self.params)
        # big vocabularies: fewer tokens a call, so [rows, bucket, vocab] logits stay ~256 MB
        self.batch_tokens = max(16, min(self.batch_tokens, (1 << 26) // max(self.cfg.vocab_size, 1)))

    @property
    def max_length(self) -> int:
        """Tokens a pair keeps (lm-eval's API-model max_length for a server of this window)."""
        return self.window - 1

    def loglikelihoods(self, pairs: Sequence[Pair]) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probs, is it the greedy continuation) per pair, in order."""
        kept = []
        for ctx, cont in pairs:
            if not len(cont):
                raise ValueError("a continuation encodes to no tokens; there is nothing to score")
            ids = [int(t) for t in (list(ctx) + list(cont))[-self.max_length :]]
            first = max(1, len(ids) - len(cont))  # first scored token (an empty context scores from the 2nd)
            kept.append((ids, first))
        out: list[tuple[float, bool] | None] = [None] * len(kept)
        by_bucket: dict[int, list[int]] = {}
        for i in sorted(range(len(kept)), key=lambda i: len(kept[i][0])):
            by_bucket.setdefault(bucket(len(kept[i][0]) - 1, self.window), []).append(i)
        for p, members in by_bucket.items():
            rows = max(1, self.batch_tokens // p)
            for s in range(0, len(members), rows):
                part = members[s : s + rows]
                inputs, targets, mask = (np.zeros((rows, p), t) for t in (np.int32, np.int32, bool))
                for r, i in enumerate(part):
                    ids, first = kept[i]
                    n = len(ids) - 1
                    inputs[r, :n], targets[r, :n] = ids[:-1], ids[1:]
                    mask[r, first - 1 : n] = True
                sums, greedy = score_rows_jit(self.cfg, self.params, inputs, targets, mask)
                sums, greedy = np.asarray(sums), np.asarray(greedy)
                for r, i in enumerate(part):
                    out[i] = (float(sums[r]), bool(greedy[r]))
        return out  # type: ignore[return-value]

    @staticmethod
    def compilations() -> int:
        return score_rows_jit._cache_size()
