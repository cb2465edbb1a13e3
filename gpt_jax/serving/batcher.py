"""Continuous batching on the host: a thread that admits queued jobs into free slots between decode
chunks, runs one compiled chunk for all slots, and hands each job its new text.

A job is one choice of one request (n > 1 = n jobs). Jobs leave when they produce the tokenizer's eos,
hit a stop string or max_tokens, are refused by the output filter, or are cancelled (a client that went
away): their slot is free for the next chunk. `submit` refuses (QueueFull) past `max_queue` waiting jobs.

Pipelined: chunk k+1 is dispatched before the host hands out chunk k's tokens, so detokenizing, filters
and streaming overlap the compute. A job that will reach max_tokens within the chunks already dispatched
gives its slot to the next job at once (the insert runs after those chunks on the device); one that ends
early (eos, stop, filter, cancel) rides one more chunk idle.
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
    done: bool = False  # ended (set on the batcher thread)
    planned: int = 0  # tokens the chunks dispatched so far will have produced for it
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
        self.mode = sl.mode(cfg.vocab_size, limits.top_k_bound)
        banned = np.zeros(cfg.vocab_size, bool)
        banned[list(banned_ids)] = True
        self.shared = jax.device_put(sl.Shared(banned_V=banned), self.device)
        self.state = self._fresh()
        self.jobs: list[Job | None] = [None] * limits.slots
        self.pending: collections.deque[Job] = collections.deque()
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.thread.start()

    def _fresh(self) -> sl.Slots:
        return jax.device_put(sl.init_slots(self.cfg, self.limits.slots, self.limits.window), self.device)

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
        """Slots whose job still needs chunks."""
        return sum(self._needs(j) for j in self.jobs)

    @staticmethod
    def _needs(job: Job | None) -> bool:
        return job is not None and not (job.done or job.cancelled) and job.planned < job.max_tokens

    def waiting(self) -> int:
        return len(self.pending)

    def close(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify()
        self.thread.join(timeout=10)

    # -- the thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        flight = None  # the chunk on the device: (each slot's job when it was dispatched, its outputs)
        while True:
            with self.cond:
                while self.running and not self.pending and not self.busy() and flight is None:
                    self.cond.wait()
                if not self.running:
                    return
                admit = []
                free = sum(not self._needs(j) for j in self.jobs)
                while self.pending and len(admit) < free:
                    job = self.pending.popleft()
                    if not job.cancelled:
                        admit.append(job)
            inserted = []
            try:
                for job in admit:
                    inserted.append(self._insert(job))
                for i, job in enumerate(self.jobs):  # cancelled jobs leave before the chunk
                    if job is not None and job.cancelled:
                        self.jobs[i] = None
                nxt = self._dispatch() if self.busy() else None
                if flight is not None:
                    self._feed_chunk(*flight)
                for first in inserted:
                    self._feed(*first)
                flight = nxt
            except Exception as e:  # a failed device call must not strand clients: end their jobs
                stranded = admit + [j for j in self.jobs + (flight[0] if flight else []) if j is not None]
                for job in {id(j): j for j in stranded if not j.done}.values():
                    job.done = True
                    job.sink(Piece("", [], [], f"error: {type(e).__name__}: {e}"))
                # and fresh slots: a failed call may have eaten the donated state
                self.jobs, flight = [None] * self.limits.slots, None
                self.state = self._fresh()

    def _insert(self, job: Job):
        """Dispatches the prefill into a free slot; returns what _feed needs for its first token."""
        slot = next(i for i, j in enumerate(self.jobs) if not self._needs(j))
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
        self.jobs[slot], job.planned = job, 1
        return slot, job, token[None], lp[None], top_lp[None], top_id[None]

    def _dispatch(self):
        c = self.limits.chunk
        self.state, *out = sl.step_jit(self.cfg, self.mode, c, self.params, self.state, self.shared)
        for job in self.jobs:
            if job is not None:
                job.planned += c
        return list(self.jobs), out

    def _feed_chunk(self, jobs: list[Job | None], out) -> None:
        toks, lps, tlps, tids = map(np.asarray, out)
        for i, job in enumerate(jobs):
            if job is not None and not (job.done or job.cancelled):
                self._feed(i, job, toks[i], lps[i], tlps[i], tids[i])

    def _feed(self, slot: int, job: Job, tokens, lps, tlps, tids) -> None:
        """Take a job's new tokens up to where it ends; hand over what may be shown."""
        tokens, lps, tlps, tids = np.asarray(tokens).tolist(), np.asarray(lps), np.asarray(tlps), np.asarray(tids)
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
            job.done = True
            if self.jobs[slot] is job:
                self.jobs[slot] = None
        if piece.text or piece.tokens or finish:
            job.sink(piece)

    def compilations(self) -> dict[str, int]:
        """Compiled programs so far (jax's per-function cache sizes): fixed after warm-up."""
        return {
            "step": sl.step_jit._cache_size(),
            "insert": sl.insert_jit._cache_size(),
        }
