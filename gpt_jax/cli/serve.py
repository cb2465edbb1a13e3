"""Serve a trained run over HTTP with OpenAI's API, continuous batching and a chat page at `/`.

  python -m gpt_jax.serve --workdir=runs/shk_cpu [--host=127.0.0.1] [--port=8000] [--api_key=K]
      [--slots=8 --window=256 --chunk=8 --max_queue=64 --max_n=8 --max_prompt_tokens=N --max_top_k=1024]
      [--template=plain|chatml] [--banned_words_file=F --banned_action=redact|refuse --redact_pii
       --moderate_input --moderation_hook=module:function]

Any workdir gpt_jax.sample loads serves (gpt_jax.workdir.load_run). The model is named after the
workdir's last path component (or --model_name). Clients: the `openai` package with
base_url=http://HOST:PORT/v1, or lm-eval's local-completions at /v1/completions.

Continuous batching: --slots requests decode together; each takes prompt + max_tokens <= --window
tokens (capped at block_size for position-table models). Prompts are prefilled in power-of-two length
buckets (16, 32, ... window), so a new prompt length never compiles a new program once its bucket has.
"""

from __future__ import annotations

import pathlib
import sys

from gpt_jax.cli import flags
from gpt_jax.paths import as_path, is_local
from gpt_jax.safety import Safety
from gpt_jax.serving.batcher import Limits

USAGE = "usage: python -m gpt_jax.serve --workdir=W [--host=127.0.0.1] [--port=8000] [--api_key=K] [--slots=8 ...]"
SPEC = [
    flags.Flag("workdir", help="a run directory written by gpt_jax.main or gpt_jax.finetune", required=True),
    flags.Flag("host", str, "127.0.0.1", "address to listen on (0.0.0.0: every interface)"),
    flags.Flag("port", int, 8000, "port"),
    flags.Flag("api_key", str, None, "require 'Authorization: Bearer <key>' (401 otherwise)"),
    flags.Flag("model_name", str, None, "the model's name in the API (default: the workdir's name)"),
    flags.Flag("template", str, None, "chat template: plain | chatml (default: the run's sft template, else plain)"),
    flags.Flag("slots", int, 8, "requests decoded together (continuous batching)"),
    flags.Flag("window", int, 256, "prompt + max_tokens per request (capped at block_size for learned positions)"),
    flags.Flag("chunk", int, 8, "decode steps per compiled call; requests join and leave between chunks"),
    flags.Flag("max_queue", int, 64, "waiting requests (choices) before 429"),
    flags.Flag("max_n", int, 8, "largest n (choices per request)"),
    flags.Flag("max_prompt_tokens", int, None, "longest prompt (default: window - 1)"),
    flags.Flag("max_top_k", int, 1024, "static bound of top_k (requests without top_k sample from these)"),
    flags.Flag("banned_words_file", str, None, "words/phrases and re:<regex> lines banned from outputs"),
    flags.Flag("banned_action", str, "redact", "redact | refuse (finish_reason content_filter)"),
    flags.Flag("redact_pii", bool, False, "redact e-mails, phone numbers and long ID-like numbers in outputs"),
    flags.Flag("moderate_input", bool, False, "refuse prompts that match the banned-words list (400)"),
    flags.Flag("moderation_hook", str, None, "module:function(text) -> None or a reason to refuse the prompt"),
]


def limits_of(values: dict) -> Limits:
    for name in ("slots", "window", "chunk", "max_queue", "max_n", "max_top_k"):
        if values[name] < 1:
            raise ValueError(f"--{name}={values[name]} must be >= 1")
    if values["window"] < 2:
        raise ValueError(f"--window={values['window']} must be >= 2 (a prompt token and a new one)")
    return Limits(
        slots=values["slots"],
        window=values["window"],
        chunk=values["chunk"],
        max_queue=values["max_queue"],
        top_k_bound=values["max_top_k"],
    )


def build(values: dict):
    """(Service) for the flags: the run loaded once, slots allocated, safety set up."""
    from gpt_jax import workdir as workdir_lib  # lazy: loads JAX and the checkpoint stack
    from gpt_jax.serving.service import Service  # lazy: loads JAX

    limits = limits_of(values)
    safety = Safety.from_flags(
        values["banned_words_file"],
        values["banned_action"],
        values["redact_pii"],
        values["moderate_input"],
        values["moderation_hook"],
    )
    config, cfg, params, tok = workdir_lib.load_run(values["workdir"])
    task = config.get("task") or {}
    template = values["template"] or (task.get("template", "plain") if task.get("name") == "sft" else "plain")
    wd = values["workdir"]
    name = values["model_name"] or (pathlib.Path(wd).resolve() if is_local(wd) else as_path(wd)).name
    return Service(
        name,
        cfg,
        params,
        tok,
        template=template,
        limits=limits,
        safety=safety,
        max_n=values["max_n"],
        max_prompt_tokens=values["max_prompt_tokens"],
    )


def serve(argv) -> int:
    from gpt_jax.serving.app import create_app  # lazy: FastAPI only when serving
    from gpt_jax.serving.runner import serve_forever  # lazy: uvicorn only when serving

    _, values = flags.parse(argv, SPEC, usage=USAGE)
    svc = build(values)
    try:
        serve_forever(create_app(svc, values["api_key"]), values["host"], values["port"])
    finally:
        svc.close()
    return 0


def main(argv) -> int:
    return flags.run(serve, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
