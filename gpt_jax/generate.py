"""Text generation with a KV cache: `generate` (all new tokens at once) and `stream` (chunk by chunk).

  new_ids_BxN = generate(model_config, params, prompt_ids_BxL, max_new_tokens=100, temperature=0.8, top_k=50)

Strategies (Hugging Face `generate` semantics): greedy (temperature=0), sampling with temperature,
top_k, top_p, min_p; beam search (num_beams, length_penalty, early_stopping); repetition_penalty;
banned_ids; stop_ids (the stop token is kept, later positions get pad_id); stop_strings (checked on
the host between chunks, so they need `decode`); seed makes sampling reproducible, whatever the
chunking.

Compilation: prompts are LEFT-padded to a length bucket (powers of two from 16) and the cache holds
bucket + max_new_tokens slots, so calls that share (batch, bucket, max_new_tokens, strategy, which
filters are on) reuse one program: prompt lengths within the bucket, temperature, top_k values
within their power-of-two bound, top_p, min_p, penalties and token lists are all traced.

Output: int32 numpy [B, max_new_tokens]: new tokens only; rows that stopped hold `pad_id` (default
-1, never a token id) after their stop token. With num_beams > 1 each row is its best beam.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax import sharding as shd
from gpt_jax.config import ModelConfig
from gpt_jax.generation import decode as dec
from gpt_jax.generation.beam import beam_search_jit
from gpt_jax.generation.processors import Knobs, Mode

PAD_ID = -1
EARLY_STOPPING = (False, True, "never")  # passed to the compiled beam search as its index


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything but the model and the prompts; validated on construction (one-line errors)."""

    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None  # HF/CTRL: seen tokens' logits / p (if > 0) or * p
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    stop_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    decode: Callable[[Any], str] | None = None  # ids -> text, for stop_strings
    banned_ids: tuple[int, ...] = ()
    seed: int = 0
    pad_id: int = PAD_ID
    slide: bool = False  # position-table models: re-encode the last block_size // 2 tokens when full
    chunk: int = 16  # stream: decode steps per compiled call

    def __post_init__(self):
        def need(ok, problem):
            if not ok:
                raise ValueError(problem)

        need(int(self.max_new_tokens) >= 1, f"max_new_tokens={self.max_new_tokens} must be >= 1")
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


def mode_of(o: Options, vocab: int) -> Mode:
    """The static part: which processors the compiled program contains (set = on, whatever the value)."""
    sampling = o.num_beams == 1 and not o.greedy
    k = o.top_k if sampling and o.top_k is not None and o.top_k < vocab else 0
    return Mode(
        greedy=o.greedy or o.num_beams > 1,
        top_k_bound=min(vocab, 1 << (k - 1).bit_length()) if k else 0,
        top_p=sampling and o.top_p is not None,
        min_p=sampling and o.min_p is not None,
        repetition=o.repetition_penalty is not None,
    )


def knobs_of(o: Options, vocab: int) -> Knobs:
    def mask(ids, what):
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"{what} must be token ids in [0, {vocab}), got {sorted(set(ids.tolist()))}")
        m = np.zeros(vocab, bool)
        m[ids] = True
        return m

    banned = mask(o.banned_ids, "banned_ids")
    if banned.all():
        raise ValueError("banned_ids cover the whole vocabulary; leave at least one token allowed")
    return Knobs(
        temperature=np.float32(o.temperature or 1.0),
        top_k=np.int32(o.top_k or 0),
        top_p=np.float32(o.top_p or 1.0),
        min_p=np.float32(o.min_p or 0.0),
        repetition_penalty=np.float32(o.repetition_penalty or 1.0),
        banned_V=banned,
        stop_V=mask(o.stop_ids, "stop_ids"),
        pad_id=np.int32(o.pad_id),
    )


# ----------------------------------------------------------------------------- prompts


def prompt_rows(prompt_ids_BxL, prompt_mask_BxL=None) -> list[np.ndarray]:
    """The real tokens of each row (any padding side): a 2-D array (+ mask) or a list of 1-D sequences."""
    if prompt_mask_BxL is not None:
        ids, mask = np.asarray(prompt_ids_BxL), np.asarray(prompt_mask_BxL, bool)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"prompt ids {ids.shape} and prompt_mask {mask.shape} must be the same [B, L] shape")
        rows = [r[m] for r, m in zip(ids, mask)]
    elif isinstance(prompt_ids_BxL, (list, tuple)) and not np.isscalar(prompt_ids_BxL[0] if prompt_ids_BxL else 0):
        rows = [np.asarray(r).reshape(-1) for r in prompt_ids_BxL]
    else:
        ids = np.asarray(prompt_ids_BxL)
        if ids.ndim != 2:
            raise ValueError(f"prompt ids must be [B, L] (or a list of rows), got shape {ids.shape}")
        rows = list(ids)
    if not rows:
        raise ValueError("no prompts given; pass a [B, L] array with B >= 1")
    for i, r in enumerate(rows):
        if r.size == 0:
            raise ValueError(f"prompt row {i} is empty; give at least one token (e.g. the encoding of '\\n')")
        if not np.issubdtype(r.dtype, np.integer):
            raise ValueError(f"prompt row {i} has dtype {r.dtype}; token ids must be integers")
    return [r.astype(np.int32) for r in rows]


def bucket(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def check_length(cfg: ModelConfig, longest: int, max_new: int, slide: bool = False) -> None:
    if cfg.pos == "rope" or slide or longest + max_new <= cfg.block_size:
        return
    raise ValueError(
        f"prompt ({longest} tokens) + max_new_tokens ({max_new}) exceeds block_size={cfg.block_size} of this "
        f"{cfg.pos}-position model; lower max_new_tokens to {max(cfg.block_size - longest, 0)}, shorten the prompt, "
        "or pass slide=True (re-encodes the last block_size // 2 tokens when the window is full)"
    )


def pack(cfg: ModelConfig, rows: list[np.ndarray], max_new: int, min_len: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_BxP left-padded with 0, start_B): P = the bucket (at least min_len), cropped where
    positions end at block_size."""
    lengths = [len(r) for r in rows]
    for i, r in enumerate(rows):
        if r.min() < 0 or r.max() >= cfg.vocab_size:
            raise ValueError(f"prompt row {i} has ids outside [0, {cfg.vocab_size}); encode with the run's tokenizer")
    p = max(bucket(max(lengths)), min_len)
    if cfg.pos != "rope":  # pad slots beyond what any row can use are pure waste
        p = max(max(lengths), min(p, cfg.block_size - max_new))
    prompt_BxP = np.zeros((len(rows), p), np.int32)
    for i, r in enumerate(rows):
        prompt_BxP[i, p - len(r) :] = r
    return prompt_BxP, np.asarray([p - n for n in lengths], np.int32)


# ----------------------------------------------------------------------------- devices


@functools.cache
def _param_shardings(cfg: ModelConfig, mesh):
    from gpt_jax.model import init_params

    return shd.logical_sharding(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))), mesh)


class _Placement:
    """No mesh: default device. A mesh (e.g. the training one): params per gpt_jax.sharding rules,
    the batch over (data, fsdp) when it divides, and the rules in scope while tracing."""

    def __init__(self, cfg: ModelConfig, mesh):
        self.cfg, self.mesh = cfg, mesh

    def scope(self):
        stack = contextlib.ExitStack()
        if self.mesh is not None:
            stack.enter_context(jax.set_mesh(self.mesh))
            stack.enter_context(nn.logical_axis_rules(shd.DEFAULT_RULES))
        return stack

    def params(self, params):  # outside scope(): tracing init_params there would hit the rules
        if self.mesh is None:
            return params
        return jax.device_put(params, _param_shardings(self.cfg, self.mesh))

    def batch(self, *arrays):
        if self.mesh is None:
            return tuple(jnp.asarray(a) for a in arrays)
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        out = []
        for a in arrays:
            s = shd.batch_sharding(self.mesh, a.ndim) if a.shape[0] % shards == 0 else shd.replicated(self.mesh)
            out.append(jax.device_put(a, s))
        return tuple(out)

    def replicated(self, tree):
        return tree if self.mesh is None else jax.device_put(tree, shd.replicated(self.mesh))


# ----------------------------------------------------------------------------- public API


def generate(
    model_config: ModelConfig,
    params,
    prompt_ids_BxL,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    repetition_penalty: float | None = None,
    stop_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    decode: Callable[[Any], str] | None = None,
    banned_ids: Sequence[int] = (),
    seed: int = 0,
    prompt_mask_BxL=None,
    pad_id: int = PAD_ID,
    slide: bool = False,
    mesh=None,
) -> np.ndarray:
    """New token ids, int32 [B, max_new_tokens]; see the module docstring. `params` are unboxed.

    prompt_ids_BxL: [B, L] ids (with prompt_mask_BxL marking real tokens, either padding side) or a
    list of 1-D rows of any lengths. `mesh`: run sharded on it (e.g. the training mesh).
    """
    o = Options(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        num_beams=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        repetition_penalty=repetition_penalty,
        stop_ids=tuple(stop_ids),
        stop_strings=tuple(stop_strings),
        decode=decode,
        banned_ids=tuple(banned_ids),
        seed=seed,
        pad_id=pad_id,
        slide=slide,
    )
    cfg, n = model_config, int(max_new_tokens)
    rows = prompt_rows(prompt_ids_BxL, prompt_mask_BxL)
    check_length(cfg, max(map(len, rows)), n, o.slide)
    if o.stop_strings or (o.slide and cfg.pos != "rope" and max(map(len, rows)) + n > cfg.block_size):
        out = np.full((len(rows), n), o.pad_id, np.int32)
        chunks = list(_stream(cfg, params, rows, o, mesh))
        got = np.concatenate(chunks, axis=1) if chunks else out[:, :0]
        out[:, : got.shape[1]] = got
        return out
    mode, knobs = mode_of(o, cfg.vocab_size), knobs_of(o, cfg.vocab_size)
    prompt_BxP, start_B = pack(cfg, rows, n)
    cache_len = prompt_BxP.shape[1] + n
    place = _Placement(cfg, mesh)
    params = place.params(params)
    with place.scope():
        prompt_BxP, start_B = place.batch(prompt_BxP, start_B)
        knobs = place.replicated(knobs)
        if o.num_beams > 1:
            keep = max(2, 1 + len(set(o.stop_ids))) * o.num_beams
            early = np.int32(EARLY_STOPPING.index(o.early_stopping))
            args = (cfg, mode, cache_len, n, o.num_beams, keep, params, prompt_BxP, start_B, knobs)
            out = beam_search_jit(*args, np.float32(o.length_penalty), early)
        else:
            key = place.replicated(jax.random.key(o.seed))
            out = dec.generate_jit(cfg, mode, cache_len, n, params, prompt_BxP, start_B, knobs, key)
    return np.asarray(out)


def stream(
    model_config: ModelConfig,
    params,
    prompt_ids_BxL,
    *,
    max_new_tokens: int,
    chunk: int = 16,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    stop_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    decode: Callable[[Any], str] | None = None,
    banned_ids: Sequence[int] = (),
    seed: int = 0,
    prompt_mask_BxL=None,
    pad_id: int = PAD_ID,
    slide: bool = False,
    mesh=None,
) -> Iterator[np.ndarray]:
    """Yields new token ids as they are produced: int32 [B, c] per chunk, the prefill's first token
    alone (c=1) then up to `chunk` at a time; rows that stopped hold pad_id. Ends after
    max_new_tokens or once every row stopped. Same tokens as `generate` with the same arguments.

    The next chunk is dispatched before the current one is handed over, so the device keeps working
    while the caller decodes and prints. Sampling only (no beam search).
    """
    o = Options(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        stop_ids=tuple(stop_ids),
        stop_strings=tuple(stop_strings),
        decode=decode,
        banned_ids=tuple(banned_ids),
        seed=seed,
        pad_id=pad_id,
        slide=slide,
        chunk=chunk,
    )
    rows = prompt_rows(prompt_ids_BxL, prompt_mask_BxL)
    check_length(model_config, max(map(len, rows)), int(max_new_tokens), o.slide)
    return _stream(model_config, params, rows, o, mesh)


def _stream(cfg: ModelConfig, params, rows, o: Options, mesh) -> Iterator[np.ndarray]:
    """stream() after validation: windows (slide) -> chunks, cut at stop strings."""
    done = np.zeros(len(rows), bool)  # shared: stop ids and stop strings set it, each dispatch reads it
    outputs = [[] for _ in rows]
    seen_text = [0 for _ in rows]
    longest = max(map(len, o.stop_strings), default=0)
    for toks_BxC in _windows(cfg, params, rows, o, mesh, done):
        for b in np.flatnonzero(~done) if o.stop_strings else ():
            new = [int(t) for t in toks_BxC[b] if t != o.pad_id]
            text = o.decode(outputs[b] + new)
            since = max(0, seen_text[b] - longest + 1)  # a stop string may straddle two chunks
            if any(s in text[since:] for s in o.stop_strings):
                j = next(
                    j
                    for j in range(len(new))
                    if any(s in o.decode(outputs[b] + new[: j + 1])[since:] for s in o.stop_strings)
                )
                toks_BxC[b, j + 1 :] = o.pad_id
                new, done[b] = new[: j + 1], True
            outputs[b] += new
            seen_text[b] = len(text)
        yield toks_BxC
        if done.all():
            return


def _windows(cfg: ModelConfig, params, rows, o: Options, mesh, done) -> Iterator[np.ndarray]:
    """Position-table models past block_size (slide=True): windows of block_size // 2 new tokens, each
    continuing from the last block_size // 2 tokens of each row, re-encoded. Windows share their
    shapes, so one compiled program serves all (a prompt longer than half a block makes the first
    window shorter); the last one is cut short on the host."""
    left, contexts, window = int(o.max_new_tokens), list(rows), 0
    keep = cfg.block_size // 2
    min_len = 0
    while left > 0 and not done.all():
        if cfg.pos == "rope" or (window == 0 and max(map(len, contexts)) + left <= cfg.block_size):
            n = left
        else:
            if max(map(len, contexts)) >= cfg.block_size:  # a prompt that fills the window alone
                contexts = [c[-keep:] for c in contexts]
            n, min_len = cfg.block_size - max(keep, *map(len, contexts)), keep
        key = jax.random.key(o.seed) if window == 0 else jax.random.fold_in(jax.random.key(o.seed), window)
        made = []
        for toks_BxC in _chunks(cfg, params, contexts, n, o, key, mesh, done, min_len):
            toks_BxC = toks_BxC[:, : left - sum(m.shape[1] for m in made)]
            made.append(np.maximum(toks_BxC, 0))  # pads only in rows that are done: any valid id will do
            yield toks_BxC
            if sum(m.shape[1] for m in made) == left:
                break
        left -= sum(m.shape[1] for m in made)
        contexts = [np.concatenate([c, *[m[b] for m in made]])[-keep:] for b, c in enumerate(contexts)]
        window += 1


def _chunks(cfg: ModelConfig, params, rows, n: int, o: Options, key, mesh, done, min_len=0) -> Iterator[np.ndarray]:
    """Prefill, then compiled chunks of o.chunk decode steps. The first token is handed over at once;
    after it one chunk stays in flight ahead of the caller, so the device works while the host prints."""
    mode, knobs = mode_of(o, cfg.vocab_size), knobs_of(o, cfg.vocab_size)
    prompt_BxP, start_B = pack(cfg, rows, n, min_len)
    cache_len = prompt_BxP.shape[1] + n
    stop_ids = np.flatnonzero(knobs.stop_V)
    place = _Placement(cfg, mesh)
    params = place.params(params)
    with place.scope():
        prompt_BxP, start_B = place.batch(prompt_BxP, start_B)
        knobs, key = place.replicated(knobs), place.replicated(key)
        state, first_Bx1 = dec.prefill_jit(cfg, mode, cache_len, params, prompt_BxP, start_B, knobs, key)
    planned = 1

    def dispatch():
        nonlocal state, planned
        if planned >= n or done.all():
            return None
        with place.scope():
            state = state.replace(done_B=state.done_B | place.batch(done)[0])
            state, toks_BxC, steps = dec.decode_jit(cfg, mode, o.chunk, n, params, state, knobs)
        planned += min(o.chunk, n - planned)
        return toks_BxC, steps

    def to_host(toks_BxC, steps):
        toks_BxC = np.array(toks_BxC)[:, : int(steps)]
        toks_BxC[done] = o.pad_id  # rows the host stopped after this chunk was dispatched
        done[:] |= np.isin(toks_BxC, stop_ids).any(axis=1)
        return toks_BxC

    yield to_host(first_Bx1, 1)
    pending = dispatch()
    while pending is not None:
        ahead = dispatch()
        toks_BxC = to_host(*pending)
        if toks_BxC.shape[1] == 0:  # every row was done
            return
        yield toks_BxC
        pending = ahead
