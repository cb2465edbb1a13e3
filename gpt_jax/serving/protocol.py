"""OpenAI request parsing and validation: JSON bodies in, typed requests out, or one ApiError naming the
bad parameter (OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}). Pure Python.

Fields the server does not implement are refused when set to anything but their no-op value
(presence/frequency penalties other than 0, best_of other than n), never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json

MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_LOGPROBS = 5


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, kind=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or {401: "authentication_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
            status, "invalid_request_error" if status < 500 else "server_error"
        )

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # top alternatives per token (0..5); None = no logprobs
    stream: bool = False
    include_usage: bool = False
    presence_penalty: float = 0.0  # OpenAI's: logit -= presence * (count > 0) + frequency * count
    frequency_penalty: float = 0.0  # (counts of the tokens this choice has generated so far)


@dataclasses.dataclass(frozen=True)
class Completion:
    prompts: list  # each a str or a list of token ids
    sampling: Sampling
    echo: bool = False


@dataclasses.dataclass(frozen=True)
class Chat:
    system: str
    turns: list[tuple[str, str]]
    user: str
    sampling: Sampling


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON ({e}); send a JSON object", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


def _typed(body: dict, name: str, kinds, default=None, *, what: str):
    value = body.get(name, default)
    if value is None:
        return default
    # bool is an int in Python: only accept it where a bool is asked for.
    if isinstance(value, bool) and bool not in kinds:
        value = object()
    if not isinstance(value, kinds) or (float in kinds and isinstance(value, float) and value != value):
        raise ApiError(400, f"'{name}' must be {what}, got {json.dumps(body.get(name))[:40]}", param=name)
    return value


def _range(name, value, ok, rule):
    if value is not None and not ok(value):
        raise ApiError(400, f"'{name}'={value} {rule}", param=name)
    return value


def check_model(body: dict, served: str) -> None:
    model = _typed(body, "model", (str,), served, what="a string (the model name from /v1/models)")
    if model != served:
        raise ApiError(
            404, f"the model '{model}' does not exist; this server serves '{served}'", "model", "model_not_found"
        )


def sampling(body: dict, *, max_n: int, default_max_tokens: int, chat: bool = False) -> Sampling:
    presence, frequency = (
        _range(name, _typed(body, name, (int, float), 0, what="a number"), lambda v: -2 <= v <= 2, "must be in [-2, 2]")
        for name in ("presence_penalty", "frequency_penalty")
    )
    tokens_name = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
    max_tokens = _typed(body, tokens_name, (int,), default_max_tokens, what="an integer")
    temperature = _range(
        "temperature",
        _typed(body, "temperature", (int, float), 1.0, what="a number"),
        lambda v: 0 <= v <= 2,
        "must be in [0, 2]",
    )
    top_p = _range(
        "top_p", _typed(body, "top_p", (int, float), None, what="a number"), lambda v: 0 < v <= 1, "must be in (0, 1]"
    )
    top_k = _typed(body, "top_k", (int,), None, what="an integer")
    top_k = None if top_k in (-1, 0) else _range("top_k", top_k, lambda v: v >= 1, "must be >= 1 (or -1: off)")
    n = _range(
        "n", _typed(body, "n", (int,), 1, what="an integer"), lambda v: 1 <= v <= max_n, f"must be in [1, {max_n}]"
    )
    best_of = _typed(body, "best_of", (int,), n, what="an integer")
    _range("best_of", best_of, lambda v: v == n, "other than n is not supported")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", param="stop")
    _range("stop", len(stop or []), lambda v: v <= MAX_STOP, f"sequences: at most {MAX_STOP}")
    seed = _typed(body, "seed", (int,), None, what="an integer")
    if chat:
        want = _typed(body, "logprobs", (bool,), False, what="a boolean")
        top = _typed(body, "top_logprobs", (int,), 0, what="an integer")
        logprobs = top if want else None
    else:
        logprobs = _typed(body, "logprobs", (int,), None, what="an integer (0-5) or null")
    _range("logprobs", logprobs, lambda v: 0 <= v <= MAX_LOGPROBS, f"must be in [0, {MAX_LOGPROBS}]")
    stream = _typed(body, "stream", (bool,), False, what="a boolean")
    options = _typed(body, "stream_options", (dict,), {}, what="an object")
    return Sampling(
        max_tokens=max_tokens,
        temperature=float(temperature),
        top_p=None if top_p is None else float(top_p),
        top_k=top_k,
        n=n,
        stop=tuple(stop or ()),
        seed=seed,
        logprobs=logprobs,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        presence_penalty=float(presence),
        frequency_penalty=float(frequency),
    )


def is_ids(x) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def completion(body: dict, *, max_n: int) -> Completion:
    prompt = body.get("prompt")
    if isinstance(prompt, str) or is_ids(prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or is_ids(p) for p in prompt):
        prompts = list(prompt)
    else:
        raise ApiError(
            400,
            "'prompt' must be a string, a list of strings, a list of token ids or a list of such lists",
            param="prompt",
        )
    if any(p == "" for p in prompts):
        raise ApiError(400, "'prompt' is empty; give at least one character", param="prompt")
    echo = _typed(body, "echo", (bool,), False, what="a boolean")
    s = sampling(body, max_n=max_n, default_max_tokens=16)
    if s.max_tokens < (0 if echo else 1):
        rule = "must be >= 0 (0 with echo: score the prompt only)" if echo else "must be >= 1 (0 only with echo=true)"
        raise ApiError(400, f"'max_tokens'={s.max_tokens} {rule}", param="max_tokens")
    if s.max_tokens == 0 and s.stream:
        raise ApiError(400, "'max_tokens'=0 scores the prompt; it cannot stream", param="stream")
    return Completion(prompts=prompts, sampling=s, echo=echo)


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise ApiError(400, f"messages[{i}].content parts must be text parts", param=f"messages[{i}].content")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ApiError(400, f"messages[{i}].content must be a string", param=f"messages[{i}].content")
    return content


def chat(body: dict, *, max_n: int) -> Chat:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects", param="messages")
    system, turns, user = [], [], None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise ApiError(
                400, f"messages[{i}] must have a role of system, user or assistant", param=f"messages[{i}].role"
            )
        text, role = _content(m, i), m["role"]
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            if user is not None:  # two user turns in a row: one turn
                text = user + "\n" + text
            user = text
        else:
            if user is None:
                raise ApiError(400, f"messages[{i}]: an assistant turn must follow a user turn", param="messages")
            turns.append((user, text))
            user = None
    if user is None:
        raise ApiError(400, "the last message must be from the user", param="messages")
    s = sampling(body, max_n=max_n, default_max_tokens=-1, chat=True)
    if s.max_tokens == 0 or s.max_tokens < -1:
        raise ApiError(400, f"'max_tokens'={s.max_tokens} must be >= 1", param="max_tokens")
    return Chat(system="\n".join(system), turns=turns, user=user, sampling=s)
