"""The model behind the server: tokenizer, chat template, limits, safety, the batcher, prompt scoring,
and the requests turned into batcher jobs whose pieces arrive on an asyncio queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading

import numpy as np

from gpt_jax.chat_session import fit_history
from gpt_jax.chat_template import ChatTemplate
from gpt_jax.generation.options import undecodable_ids
from gpt_jax.safety import Safety
from gpt_jax.serving import slots as sl
from gpt_jax.serving.batcher import Batcher, Job, Limits, Piece, bucket
from gpt_jax.serving.protocol import ApiError, Sampling


@dataclasses.dataclass
class Choice:
    """One choice's result, filled from its pieces."""

    text: str = ""
    tokens: list = dataclasses.field(default_factory=list)
    logprobs: list = dataclasses.field(default_factory=list)
    finish: str | None = None


class Service:
    def __init__(
        self,
        name,
        cfg,
        params,
        tokenizer,
        *,
        template="plain",
        limits=Limits(),
        safety=Safety(),
        max_n=8,
        max_prompt_tokens=None,
    ):
        self.name, self.cfg, self.params, self.tok = name, cfg, params, tokenizer
        if cfg.pos != "rope" and limits.window > cfg.block_size:
            limits = dataclasses.replace(limits, window=cfg.block_size)  # positions past the table do not exist
        self.limits, self.safety, self.max_n = limits, safety, max_n
        self.template = ChatTemplate.named(template)
        self.max_prompt = min(max_prompt_tokens or limits.window - 1, limits.window - 1)
        self.eos = getattr(tokenizer, "eos_id", None)
        banned = set(undecodable_ids(tokenizer.vocab_size, cfg.vocab_size)) | set(
            safety.banned_token_ids(tokenizer.encode)
        )
        self.batcher = Batcher(
            cfg,
            params,
            self.decode,
            eos_id=self.eos,
            banned_ids=sorted(banned),
            limits=limits,
            output_filter=safety.stream_filter,
        )
        self.params = self.batcher.params  # on one device (see Batcher)
        self._score_lock = threading.Lock()

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def close(self) -> None:
        self.batcher.close()

    # -- prompts ----------------------------------------------------------------------------------
    def encode(self, prompt, param="prompt") -> list[int]:
        if isinstance(prompt, str):
            if reason := self.safety.check_input(prompt):
                raise ApiError(400, f"prompt refused by moderation: {reason}", param, "content_policy_violation")
            try:
                ids = [int(t) for t in self.tok.encode(prompt)]
            except ValueError as e:
                raise ApiError(400, f"prompt cannot be encoded: {e}", param) from None
        else:
            ids = list(prompt)
            bad = [t for t in ids if not 0 <= t < self.tok.vocab_size]
            if bad:
                raise ApiError(400, f"token ids {bad[:5]} are outside [0, {self.tok.vocab_size})", param)
        if not ids:
            raise ApiError(400, "the prompt encodes to no tokens; give at least one character", param)
        if len(ids) > self.max_prompt:
            raise ApiError(
                400,
                f"the prompt is {len(ids)} tokens; this server takes at most {self.max_prompt} (--max_prompt_tokens)",
                param,
                "context_length_exceeded",
            )
        return ids

    def check_room(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt + max_tokens > self.limits.window:
            raise ApiError(
                400,
                f"prompt ({n_prompt} tokens) + max_tokens ({max_tokens}) exceeds the context window of "
                f"{self.limits.window}; lower max_tokens to {self.limits.window - n_prompt}",
                "max_tokens",
                "context_length_exceeded",
            )

    def chat_prompt(self, system, turns, user, max_tokens: int) -> tuple[list[int], int]:
        """(prompt ids, max_tokens): history trimmed oldest-first to fit, as the chat CLI does."""
        if reason := self.safety.check_input("\n".join([system, *[u for u, _ in turns], user])):
            raise ApiError(400, f"messages refused by moderation: {reason}", "messages", "content_policy_violation")
        want = max_tokens if max_tokens > 0 else min(256, self.limits.window // 2)
        budget = min(self.max_prompt, self.limits.window - want)
        try:
            ids, _ = fit_history(self.tok.encode, self.template, system, turns, user, budget)
        except ValueError as e:
            raise ApiError(400, f"messages cannot be encoded: {e}", "messages") from None
        ids = [int(t) for t in ids]
        return ids, (max_tokens if max_tokens > 0 else self.limits.window - len(ids))

    # -- generation -------------------------------------------------------------------------------
    def start(self, prompts: list[list[int]], s: Sampling, extra_stop=()) -> tuple[list[Job], asyncio.Queue]:
        """Jobs for every (prompt, choice), submitted; their pieces arrive as (choice index, Piece)."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        seed = s.seed if s.seed is not None else random.getrandbits(31)
        jobs = []
        for p, ids in enumerate(prompts):
            self.check_room(len(ids), s.max_tokens)
            for j in range(s.n):
                index = p * s.n + j

                def sink(piece: Piece, index=index):
                    loop.call_soon_threadsafe(queue.put_nowait, (index, piece))

                jobs.append(
                    Job(
                        prompt=ids,
                        max_tokens=s.max_tokens,
                        sink=sink,
                        temperature=s.temperature,
                        top_k=s.top_k,
                        top_p=s.top_p,
                        seed=(seed + 1_000_003 * j) % (1 << 31),
                        stop=tuple(s.stop) + tuple(extra_stop),
                        logprobs=s.logprobs is not None,
                        presence_penalty=s.presence_penalty,
                        frequency_penalty=s.frequency_penalty,
                    )
                )
        if any((j.top_k or 0) > self.batcher.mode.top_k_bound for j in jobs):
            raise ApiError(400, f"'top_k' must be <= {self.batcher.mode.top_k_bound} (--max_top_k)", "top_k")
        self.batcher.submit(jobs)
        return jobs, queue

    async def collect(self, jobs: list[Job], queue: asyncio.Queue) -> list[Choice]:
        choices = [Choice() for _ in jobs]
        left = len(jobs)
        try:
            while left:
                index, piece = await queue.get()
                c = choices[index]
                c.text += piece.text
                c.tokens += piece.tokens
                c.logprobs += piece.logprobs
                if piece.finish:
                    c.finish, left = piece.finish, left - 1
        finally:
            self.batcher.cancel([j for j, c in zip(jobs, choices) if c.finish is None])
        for c in choices:
            if c.finish and c.finish.startswith("error"):
                raise ApiError(500, f"generation failed: {c.finish}", code="server_error")
        return choices

    def score(self, ids: list[int]):
        """Echo logprobs of a prompt: (token_logprobs with None first, top [(id, lp)] per token, None first)."""
        n = len(ids)
        p = bucket(n, self.limits.window)
        row = np.zeros((1, p), np.int32)
        row[0, :n] = ids
        with self._score_lock:
            chosen, top_lp, top_id = sl.score_jit(self.cfg, self.params, row)
        chosen, top_lp, top_id = np.asarray(chosen[0]), np.asarray(top_lp[0]), np.asarray(top_id[0])
        lps = [None] + [float(x) for x in chosen[: n - 1]]
        tops = [None] + [[(int(i), float(v)) for i, v in zip(top_id[t], top_lp[t])] for t in range(n - 1)]
        return lps, tops
