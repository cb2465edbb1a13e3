"""The FastAPI app: OpenAI's /v1/models, /v1/completions and /v1/chat/completions (JSON or server-sent
events ending with `data: [DONE]`), the chat page at `/`, and /health.

Errors are OpenAI's JSON with the right status: 400 bad request, 401 missing/wrong Bearer key (when the
server has one), 404 unknown model or route, 429 queue full (with Retry-After), 500 a failed generation.
A streaming client that disconnects has its jobs cancelled: their slots are free for the next chunk.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from gpt_jax.serving import protocol
from gpt_jax.serving.batcher import QueueFull
from gpt_jax.serving.protocol import ApiError
from gpt_jax.serving.service import Service

STATIC = pathlib.Path(__file__).parent / "static"
RETRY_AFTER_S = 1


def _error(e: ApiError) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 429 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


class Formatter:
    """OpenAI response objects for one request."""

    def __init__(self, svc: Service, chat: bool):
        self.svc, self.chat = svc, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def head(self, obj: str, choices, usage=None) -> dict:
        out = {"id": self.id, "object": obj, "created": self.created, "model": self.svc.name, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out

    def token(self, i: int) -> str:
        if not 0 <= i < self.svc.tok.vocab_size:  # vocab padding / objective sentinels: no text of their own
            return f"<|id:{i}|>"
        return self.svc.decode([i])

    def completion_logprobs(self, tokens, lps, tops, k: int, offset0: int = 0) -> dict:
        texts = [self.token(t) for t in tokens]
        offsets, at = [], offset0
        for t in texts:
            offsets.append(at)
            at += len(t)
        top = [None if tp is None else {self.token(i): v for i, v in tp[:k]} for tp in tops]
        return {"tokens": texts, "token_logprobs": lps, "top_logprobs": top, "text_offset": offsets}

    def chat_logprobs(self, tokens, entries, k: int) -> dict:
        def one(i, v):
            t = self.token(i)
            return {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))}

        return {
            "content": [
                {**one(t, lp), "top_logprobs": [one(i, v) for i, v in top[:k]]} for t, (lp, top) in zip(tokens, entries)
            ]
        }


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def create_app(svc: Service, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="gpt_jax", docs_url=None, redoc_url=None)
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _error(e)

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):
        return _error(ApiError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        return _error(ApiError(500, f"internal error: {type(e).__name__}: {e}", code="server_error"))

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        got = request.headers.get("authorization", "")
        if not secrets.compare_digest(got.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'", code="invalid_api_key")

    async def body_of(request: Request) -> dict:
        authorize(request)
        body = protocol.parse_json(await request.body())
        protocol.check_model(body, svc.name)
        return body

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        b = svc.batcher
        return {
            "status": "ok",
            "slots": b.limits.slots,
            "busy": b.busy(),
            "waiting": b.waiting(),
            "compilations": b.compilations(),
        }

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": svc.name, "object": "model", "created": 0, "owned_by": "gpt_jax"}]}

    @app.get("/v1/settings")
    async def settings(request: Request):  # what the chat page shows
        authorize(request)
        lim = svc.limits
        return {
            "model": svc.name,
            "window": lim.window,
            "max_prompt_tokens": svc.max_prompt,
            "chat_stop": svc.template.stop,
            "max_n": svc.max_n,
        }

    # vLLM's tokenizer endpoints: lm-eval's local-completions finds them and tokenizes through the
    # server (tokenizer_backend=remote), so no Hugging Face tokenizer is needed for our runs.
    @app.get("/tokenizer_info")
    async def tokenizer_info(request: Request):
        authorize(request)
        eos = None if svc.eos is None else svc.decode([svc.eos])
        return {
            "eos_token": eos,
            "bos_token": None,
            "pad_token": None,
            "chat_template": None,
            "model_max_length": svc.limits.window,
        }

    @app.post("/tokenize")
    async def tokenize(request: Request):
        authorize(request)
        body = protocol.parse_json(await request.body())
        text = body.get("prompt")
        if not isinstance(text, str):
            raise ApiError(400, "'prompt' must be a string", "prompt")
        try:
            ids = [int(t) for t in svc.tok.encode(text)]
        except ValueError as e:
            raise ApiError(400, f"prompt cannot be encoded: {e}", "prompt") from None
        return {"tokens": ids, "count": len(ids), "max_model_len": svc.limits.window}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        authorize(request)
        tokens = protocol.parse_json(await request.body()).get("tokens")
        if not protocol.is_ids(tokens) or not all(0 <= t < svc.tok.vocab_size for t in tokens):
            raise ApiError(400, f"'tokens' must be a list of token ids in [0, {svc.tok.vocab_size})", "tokens")
        return {"prompt": svc.decode(tokens)}

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = protocol.completion(await body_of(request), max_n=svc.max_n)
        prompts = [svc.encode(p) for p in req.prompts]
        s, fmt = req.sampling, Formatter(svc, chat=False)
        if s.max_tokens == 0:  # echo-only: score the prompts (lm-eval's loglikelihood)
            return await score_only(prompts, req, fmt)
        jobs, queue = _start(svc, prompts, s)
        if s.stream:
            echo = [svc.decode(prompts[i // s.n]) for i in range(len(jobs))] if req.echo else None
            return _stream(svc, jobs, queue, fmt, prompts, s, chat=False, echo=echo)
        choices = await svc.collect(jobs, queue)
        out = []
        for index, c in enumerate(choices):
            ids = prompts[index // s.n]
            text, lp = c.text, None
            if req.echo:
                text = svc.decode(ids) + text
            if s.logprobs is not None:
                tokens, lps, tops = list(c.tokens), [v for v, _ in c.logprobs], [t for _, t in c.logprobs]
                if req.echo:
                    plps, ptops = await asyncio.to_thread(svc.score, ids)
                    tokens, lps, tops = ids + tokens, plps + lps, ptops + tops
                lp = fmt.completion_logprobs(tokens, lps, tops, s.logprobs)
            out.append({"index": index, "text": text, "logprobs": lp, "finish_reason": c.finish})
        used = usage(sum(map(len, prompts)), sum(len(c.tokens) for c in choices))
        return fmt.head("text_completion", out, used)

    async def score_only(prompts, req, fmt):
        out = []
        for index, ids in enumerate(prompts):
            lps, tops = await asyncio.to_thread(svc.score, ids)
            k = req.sampling.logprobs
            lp = fmt.completion_logprobs(ids, lps, tops, k) if k is not None else None
            for j in range(req.sampling.n):
                out.append(
                    {
                        "index": index * req.sampling.n + j,
                        "text": svc.decode(ids) if req.echo else "",
                        "logprobs": lp,
                        "finish_reason": "length",
                    }
                )
        return fmt.head("text_completion", out, usage(sum(map(len, prompts)), 0))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = protocol.chat(await body_of(request), max_n=svc.max_n)
        ids, max_tokens = svc.chat_prompt(req.system, req.turns, req.user, req.sampling.max_tokens)
        s = req.sampling.__class__(**{**req.sampling.__dict__, "max_tokens": max_tokens})
        fmt = Formatter(svc, chat=True)
        jobs, queue = _start(svc, [ids], s, extra_stop=(svc.template.stop,))
        if s.stream:
            return _stream(svc, jobs, queue, fmt, [ids], s, chat=True)
        choices = await svc.collect(jobs, queue)
        out = []
        for index, c in enumerate(choices):
            lp = fmt.chat_logprobs(c.tokens, c.logprobs, s.logprobs) if s.logprobs is not None else None
            message = {"role": "assistant", "content": c.text}
            out.append({"index": index, "message": message, "logprobs": lp, "finish_reason": c.finish})
        return fmt.head("chat.completion", out, usage(len(ids), sum(len(c.tokens) for c in choices)))

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def unknown(path: str):
        raise ApiError(
            404,
            f"no route /v1/{path}; this server has /v1/models, /v1/completions, /v1/chat/completions",
            code="not_found",
        )

    return app


def _start(svc: Service, prompts, s, extra_stop=()):
    try:
        return svc.start(prompts, s, extra_stop)
    except QueueFull as e:
        raise ApiError(
            429, f"the server is busy: {e}; retry after {RETRY_AFTER_S} s", code="rate_limit_exceeded"
        ) from None


def _stream(svc: Service, jobs, queue, fmt: Formatter, prompts, s, *, chat: bool, echo=None) -> StreamingResponse:
    """SSE events: (chat: a role chunk per choice; echo: the prompt's text first), the pieces, one finish
    chunk per choice, (usage,) then [DONE]."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def choice(index, piece=None, first=False, finish=None):
        if chat:
            delta = (
                {"role": "assistant", "content": ""}
                if first
                else ({"content": piece.text} if piece and piece.text else {})
            )
            out = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            if piece is not None and s.logprobs is not None and piece.tokens:
                out["logprobs"] = fmt.chat_logprobs(piece.tokens, piece.logprobs, s.logprobs)
        else:
            out = {"index": index, "text": piece.text if piece else "", "logprobs": None, "finish_reason": finish}
            if piece is not None and s.logprobs is not None and piece.tokens:
                lps, tops = [v for v, _ in piece.logprobs], [t for _, t in piece.logprobs]
                out["logprobs"] = fmt.completion_logprobs(piece.tokens, lps, tops, s.logprobs)
        return out

    async def events():
        finished = [False] * len(jobs)
        produced = 0
        try:
            if chat:
                for i in range(len(jobs)):
                    yield _sse(fmt.head(obj, [choice(i, first=True)]))
            for i, text in enumerate(echo or ()):
                yield _sse(fmt.head(obj, [{"index": i, "text": text, "logprobs": None, "finish_reason": None}]))
            while not all(finished):
                index, piece = await queue.get()
                produced += len(piece.tokens)
                if piece.finish and piece.finish.startswith("error"):
                    err = ApiError(500, f"generation failed: {piece.finish}", code="server_error")
                    yield _sse(err.body())
                    finished[index] = True
                    continue
                if piece.text or (piece.tokens and s.logprobs is not None):
                    yield _sse(fmt.head(obj, [choice(index, piece)]))
                if piece.finish:
                    finished[index] = True
                    yield _sse(fmt.head(obj, [choice(index, None, finish=piece.finish)]))
            if s.include_usage:
                yield _sse(fmt.head(obj, [], usage(sum(map(len, prompts)), produced)))
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or we are done): free what still runs
            svc.batcher.cancel([j for j, f in zip(jobs, finished) if not f])

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
