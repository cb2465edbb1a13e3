"""lm-evaluation-harness in-process: an `LM` over a gpt_jax run, scored with the server's own program.

  python -m gpt_jax.serving.lm_eval_lm --workdir=W [--tasks=hellaswag_local] [--limit=50] [--window=1024]
      [--url=http://127.0.0.1:8000]   # the same tasks through a running server (local-completions)

Loglikelihoods come from gpt_jax.serving.slots.score (right-padded to the server's power-of-two buckets),
the function the server's echo path runs, and lm-eval's TemplateLM splits context/continuation tokens
as its API models do, so in-process and over-HTTP evaluations see identical numbers. `hellaswag_local`
is a task over the staged rows ($GPT_JAX_DATA_DIR/hellaswag/hellaswag_val_preprocessed.jsonl):
context `ctx`, choices `" " + ending`, acc and acc_norm (lm-eval's definitions).
Needs `pip install lm-eval` (no torch needed for these paths).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

import numpy as np
from lm_eval.api.model import TemplateLM

TASK_YAML = """task: hellaswag_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {path}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{endings}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def task_dir(data_dir: str | None = None) -> str:
    """A directory with hellaswag_local.yaml pointing at the staged rows (lm-eval's --include_path)."""
    data = pathlib.Path(data_dir or os.environ.get("GPT_JAX_DATA_DIR") or "../shared/data")
    path = (data / "hellaswag" / "hellaswag_val_preprocessed.jsonl").resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; set GPT_JAX_DATA_DIR to the shared data directory")
    out = pathlib.Path(tempfile.mkdtemp(prefix="gpt_jax_lm_eval_"))
    (out / "hellaswag_local.yaml").write_text(TASK_YAML.format(path=path))
    return str(out)


class GptJaxLM(TemplateLM):
    """lm-eval's LM over (model config, params, tokenizer); loglikelihood only (multiple-choice tasks)."""

    def __init__(self, cfg, params, tokenizer, window: int = 1024):
        super().__init__()
        import jax  # lazy: JAX only when a model is evaluated

        if cfg.pos != "rope":
            window = min(window, cfg.block_size)
        self.cfg, self.tok, self.window = cfg, tokenizer, window
        self.params = jax.tree.map(lambda x: jax.device_put(np.asarray(x), jax.devices()[0]), params)

    @property
    def eot_token_id(self):
        eos = getattr(self.tok, "eos_id", None)
        return eos if eos is not None else 0

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return [int(t) for t in self.tok.encode(string)]

    def _loglikelihood_tokens(self, requests, **kwargs):
        from gpt_jax.serving import slots as sl  # lazy: JAX only when a model is evaluated
        from gpt_jax.serving.batcher import bucket  # lazy: as above

        out = []
        for _, context_enc, continuation_enc in requests:
            # As lm-eval's API models: keep the last `window - 1` tokens (one is left for the generated token).
            limit = self.window - 1
            ids = (context_enc + continuation_enc)[-limit:]
            ctxlen = len(context_enc) - max(0, len(context_enc) + len(continuation_enc) - limit)
            row = np.zeros((1, bucket(len(ids), self.window)), np.int32)
            row[0, : len(ids)] = ids
            chosen, top_lp, _ = sl.score_jit(self.cfg, self.params, row)
            chosen, top = np.asarray(chosen[0]), np.asarray(top_lp[0, :, 0])
            # token t's logprob sits at position t - 1 (the server's token_logprobs[t])
            lps = [float(chosen[t - 1]) for t in range(ctxlen, len(ids))]
            greedy = all(lp == float(top[t - 1]) for lp, t in zip(lps, range(ctxlen, len(ids))))
            out.append((sum(lps), greedy))
        return out

    def loglikelihood_rolling(self, requests, **kwargs):
        raise NotImplementedError("loglikelihood_rolling (perplexity tasks) is not implemented in this adapter")

    def generate_until(self, requests, **kwargs):
        raise NotImplementedError("generate_until (generative tasks) is not implemented in this adapter")


def evaluate(lm, tasks: list[str], limit: int | None, include_path: str) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    res = simple_evaluate(
        model=lm, tasks=tasks, limit=limit, task_manager=TaskManager(include_path=include_path), bootstrap_iters=0
    )
    return {t: {k: v for k, v in m.items() if isinstance(v, (int, float))} for t, m in res["results"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--tasks", default="hellaswag_local")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--url", default=None, help="evaluate through this server instead (local-completions)")
    args = ap.parse_args(argv)
    include = task_dir()
    if args.url:
        from lm_eval.models.openai_completions import LocalCompletionsAPI

        name = pathlib.Path(args.workdir).resolve().name
        lm = LocalCompletionsAPI(
            base_url=args.url.rstrip("/") + "/v1/completions",
            model=name,
            tokenizer_backend="remote",
            max_length=args.window - 1,
        )
    else:
        from gpt_jax.workdir import load_run  # lazy: loads the checkpoint stack

        _, cfg, params, tok = load_run(args.workdir)
        lm = GptJaxLM(cfg, params, tok, args.window)
    print(json.dumps(evaluate(lm, args.tasks.split(","), args.limit, include), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
