"""Load on the OpenAI-compatible server (loopback only, bounded in clients, time and tokens).

  python -m benchmarks.serve_load [--workdir=W] [--clients=32] [--seconds=60] [--max_tokens=64]
      [--slots=32] [--chunk=8] [--prompt_len=32] [--out=FILE.json]

N client threads each stream completions (`stream: true`, usage included) back to back for T seconds;
requests still running at T finish (each is bounded by max_tokens). Reported: requests done and failed
(non-200, no [DONE], an error event, a missing usage), p50/p99 time to first token (first text event),
aggregate completion tokens/s. Then the SAME load against a server with --slots=1 (one request at a
time; the rest wait in its queue): the ratio of the two tokens/s is what continuous batching buys.

Without --workdir a random-init model is served (--shape: nanoGPT's CPU recipe, 4 layers/4 heads/128 embd,
or its GPU recipe, 6/6/384; block 256, a 72-char vocabulary): load does not depend on the weights. Host
work per streamed token is the same in both modes, so batching shows only where the model's compute
dominates (the larger shape here); with a tiny model both modes are bound by the host.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
import threading
import time

import numpy as np

SHAPES = {  # random-init models (n_layer, n_head, n_embd), block 256: nanoGPT's CPU and GPU recipe shapes
    "cpu_recipe": (4, 4, 128),
    "gpu_recipe": (6, 6, 384),
}


def tiny_model(shape: str = "cpu_recipe"):
    import flax.linen as nn
    import jax

    from gpt_jax.config import ModelConfig
    from gpt_jax.data.tokenizers.char import CharTokenizer
    from gpt_jax.model import init_params

    tok = CharTokenizer("".join(sorted(set(string.ascii_letters + string.digits + " \n.,;:!?'-"))))
    n_layer, n_head, n_embd = SHAPES[shape]
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    return f"{shape}_random", cfg, nn.meta.unbox(init_params(cfg, jax.random.key(0))), tok


def client(url, name, prompt, max_tokens, until, results, lock):
    import httpx

    body = {"model": name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    with httpx.Client(timeout=600) as http:
        i = 0
        while i == 0 or time.monotonic() < until:  # at least one request (the warm-up is one)
            body["seed"] = i = i + 1
            t0, ttft, tokens, ok = time.monotonic(), None, None, False
            try:
                with http.stream("POST", url + "/v1/completions", json=body) as r:
                    if r.status_code == 200:
                        for line in r.iter_lines():
                            if not line.startswith("data: "):
                                continue
                            data = line[6:]
                            if data == "[DONE]":
                                ok = tokens is not None
                                break
                            event = json.loads(data)
                            if "error" in event:
                                break
                            if ttft is None and event["choices"] and event["choices"][0]["text"]:
                                ttft = time.monotonic() - t0
                            if event.get("usage"):
                                tokens = event["usage"]["completion_tokens"]
            except Exception:  # counted as failed
                ok = False
            with lock:
                results.append({"ok": ok, "ttft": ttft, "tokens": tokens or 0, "latency": time.monotonic() - t0})


def _serve(workdir, shape, slots, window, chunk, max_queue, port, ready):
    """The server, in a child process: the clients' threads never share its interpreter lock."""
    from gpt_jax.serving.app import create_app
    from gpt_jax.serving.batcher import Limits
    from gpt_jax.serving.runner import Background
    from gpt_jax.serving.service import Service

    if workdir:
        from gpt_jax.workdir import load_run

        _, cfg, params, tok = load_run(workdir)
        name = workdir.rstrip("/").split("/")[-1]
    else:
        name, cfg, params, tok = tiny_model(shape)
    window = min(cfg.block_size, window)
    svc = Service(name, cfg, params, tok, limits=Limits(slots=slots, window=window, chunk=chunk, max_queue=max_queue))
    with Background(create_app(svc), port=port):
        ready.set()
        while True:
            time.sleep(3600)


def load(args, slots: int) -> dict:
    import multiprocessing as mp

    import httpx

    from gpt_jax.serving.runner import free_port

    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    window = args.prompt_len + args.max_tokens + 16
    proc = ctx.Process(
        target=_serve,
        args=(args.workdir, args.shape, slots, window, args.chunk, 4 * args.clients, port, ready),
        daemon=True,
    )
    proc.start()
    try:
        if not ready.wait(300):
            raise RuntimeError("the server did not start in 300 s")
        url = f"http://127.0.0.1:{port}"
        name = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        prompt = ("To be or not to be, that is the question. " * 20)[: args.prompt_len]
        results, lock = [], threading.Lock()
        client(url, name, prompt, args.max_tokens, 0, [], lock)  # warm-up: compiles before the clock starts
        start = time.monotonic()
        until = start + args.seconds
        threads = [
            threading.Thread(target=client, args=(url, name, prompt, args.max_tokens, until, results, lock))
            for _ in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        health = httpx.get(url + "/health").json()
    finally:
        proc.terminate()
        proc.join(10)
    done = [r for r in results if r["ok"]]
    ttft = np.asarray([r["ttft"] for r in done if r["ttft"] is not None])
    tokens = sum(r["tokens"] for r in done)
    return {
        "slots": slots,
        "requests": len(results),
        "failed": len(results) - len(done),
        "wall_s": round(wall, 2),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_s": round(float(np.percentile(ttft, 50)), 3) if ttft.size else None,
        "ttft_p99_s": round(float(np.percentile(ttft, 99)), 3) if ttft.size else None,
        "compilations": health["compilations"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="cpu_recipe", help="random-init model without --workdir")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max_tokens", type=int, default=64)
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not (1 <= args.clients <= 256 and 0 < args.seconds <= 600 and 1 <= args.max_tokens <= 1024):
        print(
            "error: keep it bounded: --clients in [1, 256], --seconds in (0, 600], --max_tokens in [1, 1024]",
            file=sys.stderr,
        )
        return 2
    rows = []
    for slots in (args.slots, 1):
        rows.append(load(args, slots))
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        "model": args.workdir or f"{args.shape}_random",
        "clients": args.clients,
        "seconds": args.seconds,
        "max_tokens": args.max_tokens,
        "prompt_len": args.prompt_len,
        "chunk": args.chunk,
        "batched": rows[0],
        "one_at_a_time": rows[1],
        "speedup": round(rows[0]["tokens_per_s"] / max(rows[1]["tokens_per_s"], 1e-9), 2),
    }
    print(json.dumps({"speedup": summary["speedup"]}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if rows[0]["failed"] == 0 and rows[1]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
