"""Continuous batching on the host: a thread that admits queued jobs into free slots between decode
chunks, runs one compiled chunk for all slots, and hands each job its new text.

A job is one choice of one request (n > 1 = n jobs). Jobs leave when they produce the tokenizer's eos,
hit a stop string or max_tokens, are refused by the output filter, or are cancelled (a client that went
away): their slot is free for the next chunk. `submit` refuses (QueueFull) past `max_queue` waiting jobs.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable

import jax
import numpy as np

from gpt_jax.serving import slots as sl


class QueueFull(Exception):
    """More jobs waiting than --max_queue: the client should retry later (HTTP 429)."""


@dataclasses.dataclass
class Piece:
    """What a job produced since its last piece: text, token ids, and per token (logprob, top list)."""

    text: str
    tokens: list[int]
    logprobs: list[tuple[float, list[tuple[int, float]]]]
    finish: str | None = None  # "stop" | "length" | "content_filter" | None (more to come)


@dataclasses.dataclass(eq=False)
class Job:
    prompt: list[int]
    max_tokens: int
    sink: Callable[[Piece], None]  # called on the batcher thread
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    stop: tuple[str, ...] = ()
    logprobs: bool = False  # keep per-token logprobs (host work: only when asked for)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    cancelled: bool = False
    out: list[int] = dataclasses.field(default_factory=list)
    shown: str = ""  # text already handed out
    sent: int = 0  # tokens already handed out
    lps: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Limits:
    slots: int = 8
    window: int = 256  # prompt + max_tokens per job (at most block_size for position-table models)
    chunk: int = 8  # decode steps per compiled call
    max_queue: int = 64
    top_k_bound: int = 1024


def bucket(n: int, cap: int) -> int:
    """Prompt buckets: powers of two from 16, capped at the window (one insert program per bucket)."""
    return min(max(16, 1 << (n - 1).bit_length()), cap)


class Batcher:
    """Owns the slots and the thread that drives them. `output_filter(text, final) -> (visible, refused)`
    decides what of a job's text may be shown (redaction holds text back); default: all of it."""

    def __init__(self, cfg, params, decode, *, eos_id=None, banned_ids=(), limits=Limits(), output_filter=None):
        # One device, plainly placed: a mesh's explicit shardings (load_run's) would make every slot
        # update a sharding puzzle, and committed vs uncommitted inputs would compile programs twice.
        self.device = jax.devices()[0]
        params = jax.tree.map(
            lambda x: jax.device_put(np.asarray(x), self.device), params
        )  # via host: drops mesh types
        self.cfg, self.params, self.decode, self.eos, self.limits = cfg, params, decode, eos_id, limits
        self.filter = output_filter or (lambda text, final: (text, False))
        self.room = limits.window + limits.chunk
        self.length = 2 * self.room
        self.mode = sl.mode(cfg.vocab_size, limits.top_k_bound)
        banned = np.zeros(cfg.vocab_size, bool)
        banned[list(banned_ids)] = True
        self.shared = jax.device_put(sl.Shared(banned_V=banned), self.device)
        self.state = self._fresh()
        self.index = self.room  # host mirror of state.cache.index
        self.jobs: list[Job | None] = [None] * limits.slots
        self.pending: collections.deque[Job] = collections.deque()
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.thread.start()

    def _fresh(self) -> sl.Slots:
        return jax.device_put(sl.init_slots(self.cfg, self.limits.slots, self.length, self.room), self.device)

    # -- the API the server uses (any thread) --------------------------------------------------
    def submit(self, jobs: list[Job]) -> None:
        with self.cond:
            if len(self.pending) + len(jobs) > self.limits.max_queue:
                raise QueueFull(f"{len(self.pending)} jobs already waiting (--max_queue={self.limits.max_queue})")
            self.pending.extend(jobs)
            self.cond.notify()

    def cancel(self, jobs: list[Job]) -> None:
        with self.cond:
            for j in jobs:
                j.cancelled = True
            self.cond.notify()

    def busy(self) -> int:
        """Slots in use."""
        return sum(j is not None for j in self.jobs)

    def waiting(self) -> int:
        return len(self.pending)

    def close(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify()
        self.thread.join(timeout=10)

    # -- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.running and not self.pending and self.busy() == 0:
                    self.cond.wait()
                if not self.running:
                    return
                admit = []
                while self.pending and len(admit) + self.busy() < self.limits.slots:
                    job = self.pending.popleft()
                    if not job.cancelled:
                        admit.append(job)
            try:
                while admit:
                    self._insert(admit[0])
                    admit.pop(0)
                if self.busy():
                    self._chunk()
            except Exception as e:  # a failed device call must not strand clients: end their jobs
                for job in admit + [j for j in self.jobs if j is not None]:
                    job.sink(Piece("", [], [], f"error: {type(e).__name__}: {e}"))
                self.jobs = [
                    None
                ] * self.limits.slots  # and fresh slots: a failed call may have eaten the donated state
                self.state = self._fresh()
                self.index = self.room

    def _insert(self, job: Job) -> None:
        slot = self.jobs.index(None)
        n = len(job.prompt)
        p = bucket(n, self.limits.window)
        prompt = np.zeros((1, p), np.int32)
        prompt[0, p - n :] = job.prompt
        greedy = job.temperature == 0
        knobs = (
            np.float32(job.temperature),
            np.int32(min(job.top_k or self.mode.top_k_bound, self.mode.top_k_bound) if not greedy else 1),
            np.float32(job.top_p if job.top_p is not None else 1.0),
            np.asarray(jax.random.key_data(jax.random.key(job.seed)), np.uint32),
            np.asarray([job.presence_penalty, job.frequency_penalty], np.float32),
        )
        out = sl.insert_jit(self.cfg, self.mode, self.params, self.state, self.shared, slot, prompt, n, knobs)
        self.state, token, lp, top_lp, top_id = out
        self.jobs[slot] = job
        self._feed(slot, [int(token)], np.asarray(lp)[None], np.asarray(top_lp)[None], np.asarray(top_id)[None])

    def _chunk(self) -> None:
        c = self.limits.chunk
        if self.index + c > self.length:
            self.state = sl.roll_jit(self.state, self.room)
            self.index = self.room
        # Cancelled jobs leave before the chunk: their slot idles (and is free for the next admit).
        for i, job in enumerate(self.jobs):
            if job is not None and job.cancelled:
                self.jobs[i] = None
        self.state, toks, lps, tlps, tids = sl.step_jit(self.cfg, self.mode, c, self.params, self.state, self.shared)
        self.index += c
        toks, lps, tlps, tids = map(np.asarray, (toks, lps, tlps, tids))
        for i, job in enumerate(self.jobs):
            if job is not None:
                self._feed(i, list(toks[i]), lps[i], tlps[i], tids[i])

    def _feed(self, slot: int, tokens, lps, tlps, tids) -> None:
        """Take a job's new tokens up to where it ends; hand over what may be shown."""
        job = self.jobs[slot]
        finish = None
        for t, tok in enumerate(tokens):
            if tok == self.eos:
                finish = "stop"
                break
            job.out.append(tok)
            if job.logprobs:
                job.lps.append((float(lps[t]), [(int(i), float(v)) for i, v in zip(tids[t], tlps[t])]))
            if job.stop:
                text = self.decode(job.out)
                cut = min((k for k in (text.find(s) for s in job.stop) if k >= 0), default=-1)
                if cut >= 0:
                    finish = "stop"
                    break
            if len(job.out) >= job.max_tokens:
                finish = "length"
                break
        text = self.decode(job.out)
        if job.stop:
            cuts = [k for k in (text.find(s) for s in job.stop) if k >= 0]
            if cuts:
                text = text[: min(cuts)]
            elif finish is None:  # hold back what may be the start of a stop string
                text = text[: max(0, len(text) - max(map(len, job.stop)) + 1)]
        if finish is None:
            text = text.rstrip("\ufffd")  # a multi-byte character still arriving
        visible, refused = self.filter(text, finish is not None)
        if refused:
            finish, visible = "content_filter", job.shown
        if not visible.startswith(job.shown):  # a redaction reached into shown text: show the rest at the end
            visible = job.shown
        piece = Piece(
            visible[len(job.shown) :], job.out[job.sent :], job.lps[job.sent :] if job.logprobs else [], finish
        )
        job.shown, job.sent = visible, len(job.out)
        if finish is not None:
            self.jobs[slot] = None
        if piece.text or piece.tokens or finish:
            job.sink(piece)

    def compilations(self) -> dict[str, int]:
        """Compiled programs so far (jax's per-function cache sizes): fixed after warm-up."""
        return {
            "step": sl.step_jit._cache_size(),
            "insert": sl.insert_jit._cache_size(),
            "roll": sl.roll_jit._cache_size(),
        }
