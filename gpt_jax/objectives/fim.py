"""Fill in the middle (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle").

With probability `fim_rate` (0.5, the paper's default) a row's document is cut at two uniform random
points into prefix / middle / suffix and rearranged, else the row stays plain causal:

  PSM:  <PRE> prefix <SUF> suffix <MID> middle <EOT>
  SPM:  <PRE> <SUF> suffix <MID> prefix middle <EOT>

SPM (the paper's SPM variant that BigCode's Megatron-LM also uses) is taken by a `spm_rate`
fraction of the FIM rows, default 0: PSM only, the layout `infill_prompt` asks for.

Sentinels PRE, SUF, MID, EOT are ids base_vocab + 0..3. EOT ends the middle, so that infilling
knows where to stop; we always emit it (our windows are random cuts of one token stream, with no
document end of their own to reuse). Four sentinels go in, so the document of a FIM row is its
first L+1-4 = L-3 tokens and the row stays L+1 long; the window's last 3 tokens are dropped.
Cuts are at token (not character) boundaries. Training is causal on every token (weights 1), as in
the paper: the row is shifted into inputs/targets like plain text.

At sampling time `infill_prompt` builds `<PRE> prefix <SUF> suffix <MID>` and the model writes the
middle up to EOT (`python -m gpt_jax.sample --infill_prefix=... --infill_suffix=...`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from gpt_jax.objectives.causal import check_windows, shift
from gpt_jax.objectives.loss import WeightedCrossEntropy

SENTINEL_NAMES = ("PRE", "SUF", "MID", "EOT")


def sentinel_ids(base_vocab: int) -> dict[str, int]:
    return {n: base_vocab + i for i, n in enumerate(SENTINEL_NAMES)}


@dataclasses.dataclass(frozen=True)
class FIM(WeightedCrossEntropy):
    base_vocab: int
    fim_rate: float = 0.5  # fraction of rows rearranged; the rest stay plain causal
    spm_rate: float = 0.0  # fraction of the FIM rows in SPM order (the rest PSM)
    name: ClassVar[str] = "fim"
    plain_windows: ClassVar[bool] = False  # batches are the corpus windows as they are
    left_to_right: ClassVar[bool] = True  # the model it trains can sample text token by token
    extra_tokens: ClassVar[int] = len(SENTINEL_NAMES)

    def __post_init__(self):
        for key in ("fim_rate", "spm_rate"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"fim {key}={getattr(self, key)} must be in [0, 1]")

    @property
    def sentinels(self) -> dict[str, int]:
        return sentinel_ids(self.base_vocab)

    def make_batch(self, windows_KxBxW, rng: np.random.Generator) -> dict[str, np.ndarray]:
        w_KxBxW = check_windows(windows_KxBxW, 5, self.name)  # a document of >= 1 token
        k, b, width = w_KxBxW.shape
        d = width - len(SENTINEL_NAMES)  # document length L-3
        # Every draw happens whatever the rates, so the stream of random numbers is fixed per call.
        fim_KxB, spm_KxB = rng.random((2, k, b)) < np.array([self.fim_rate, self.spm_rate])[:, None, None]
        cuts_KxBx2 = np.sort(rng.integers(0, d + 1, size=(k, b, 2)), axis=-1)
        i, j = cuts_KxBx2[..., :1], cuts_KxBx2[..., 1:]  # prefix = doc[:i], middle = doc[i:j], suffix = doc[j:]
        spm_KxBx1 = spm_KxB[..., None]
        t_W = np.arange(width)
        # Slots of SUF and MID (PRE is at 0, EOT at W-1).
        suf_at = np.where(spm_KxBx1, 1, 1 + i)
        mid_at = np.where(spm_KxBx1, 2 + d - j, 2 + i + d - j)
        # Where slot t reads from in ext = window ++ [PRE, SUF, MID, EOT] (sentinel s at width + s).
        # Before SUF (PSM only): the prefix, t-1. Between SUF and MID: the suffix, j + (t - suf_at - 1).
        # After MID: doc[t - mid_at - 1 + i] in PSM (the middle), doc[t - mid_at - 1] in SPM (prefix +
        # middle); both equal t - 3 - d + j. Plain rows read the window as is.
        src_KxBxW = np.where(t_W < mid_at, np.where(t_W < suf_at, t_W - 1, j + t_W - suf_at - 1), t_W - 3 - d + j)
        src_KxBxW = np.where(t_W == suf_at, width + 1, np.where(t_W == mid_at, width + 2, src_KxBxW))
        src_KxBxW[..., 0], src_KxBxW[..., -1] = width, width + 3
        src_KxBxW = np.where(fim_KxB[..., None], src_KxBxW, t_W)
        sentinels_4 = np.arange(self.base_vocab, self.base_vocab + 4, dtype=np.int32)
        ext_KxBxE = np.concatenate([w_KxBxW, np.broadcast_to(sentinels_4, (k, b, 4))], -1)
        rows_KxBx1 = (np.arange(k * b) * (width + 4)).reshape(k, b, 1)
        return shift(ext_KxBxE.reshape(-1)[rows_KxBx1 + src_KxBxW])  # one flat gather


def split_fim_row(row: Sequence[int], sentinels: dict[str, int]) -> tuple[list[int], list[int], list[int]] | None:
    """(prefix, middle, suffix) of one FIM row (L+1 ids), or None for a plain row (no leading PRE).

    SPM rows hold prefix and middle together after MID, so they come back as ([], prefix + middle,
    suffix), the layout of a PSM row with an empty prefix; prefix + middle + suffix is the document
    either way.
    """
    row = [int(t) for t in row]
    if not row or row[0] != sentinels["PRE"]:
        return None
    suf, mid, end = (row.index(sentinels[n]) for n in ("SUF", "MID", "EOT"))
    return row[1:suf], row[mid + 1 : end], row[suf + 1 : mid]


def infill_prompt(
    tokenizer_encode: Callable[[str], Any], prefix: str, suffix: str, sentinels: dict[str, int]
) -> list[int]:
    """`<PRE> prefix <SUF> suffix <MID>` as ids: the model continues with the middle and then EOT."""

    def enc(text: str) -> list[int]:
        return [int(t) for t in tokenizer_encode(text)] if text else []

    return [sentinels["PRE"], *enc(prefix), sentinels["SUF"], *enc(suffix), sentinels["MID"]]


def take_middle(new_ids: Sequence[int], eot_id: int) -> tuple[list[int], bool]:
    """The generated middle (ids before the first EOT, pads < 0 dropped) and whether EOT was reached."""
    out = []
    for t in new_ids:
        t = int(t)
        if t == eot_id:
            return out, True
        if t >= 0:
            out.append(t)
    return out, False
