"""lm-evaluation-harness in-process: an `LM` over a gpt_jax run, scored with the server's own program.

  python -m gpt_jax.serving.lm_eval_lm --workdir=W [--tasks=hellaswag_local] [--limit=50] [--window=1024]
      [--url=http://127.0.0.1:8000]   # the same tasks through a running server (local-completions)

Loglikelihoods come from gpt_jax.serving.slots.score (right-padded to the server's power-of-two buckets),
the function the server's echo path runs, and lm-eval's TemplateLM splits context/continuation tokens
as its API models do, so in-process and over-HTTP evaluations see identical numbers (`--window=W` here is
the server's `--window=W`: a request keeps W - 1 tokens, lm-eval's API max_length). Local tasks over the
staged files ($GPT_JAX_DATA_DIR):
- `hellaswag_local`: hellaswag/hellaswag_val_preprocessed.jsonl, context `ctx`, choices `" " + ending`,
  acc and acc_norm (lm-eval's definitions);
- `wikitext2_local`: wikitext2/wiki.test.raw cut into its 62 documents (as EleutherAI/wikitext_document_level),
  scored by lm-eval's own wikitext detokenizer and process_results (word/byte perplexity, bits per byte)
  with lm-eval's rolling windows (`loglikelihood_rolling`).
`generate_until` decodes greedily through gpt_jax.generation (until strings, max_gen_toks).
gpt_jax.evaluate --task=hellaswag|wikitext2 is our own implementation of the same numbers.
Needs `pip install lm-eval` (no torch needed for these paths).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import shutil
import sys
import tempfile

import lm_eval.tasks.wikitext.preprocess_wikitext as lm_eval_wikitext
import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from gpt_jax.data.tokenizers import load_tokenizer
from gpt_jax.eval_tasks import wikitext

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


WIKITEXT_YAML = """task: wikitext2_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: !function preprocess_wikitext.wikitext_detokenizer
process_results: !function preprocess_wikitext.process_results
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


def task_dir(data_dir: str | None = None) -> str:
    """A directory with hellaswag_local.yaml and wikitext2_local.yaml over the staged files (lm-eval's
    --include_path); WikiText-2's documents are written there as JSONL, lm-eval's wikitext functions copied."""
    data = pathlib.Path(data_dir or os.environ.get("GPT_JAX_DATA_DIR") or "../shared/data")
    path = (data / "hellaswag" / "hellaswag_val_preprocessed.jsonl").resolve()
    raw = (data / wikitext.RELATIVE_PATH).resolve()
    for p in (path, raw):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; set GPT_JAX_DATA_DIR to the shared data directory")
    out = pathlib.Path(tempfile.mkdtemp(prefix="gpt_jax_lm_eval_"))
    (out / "hellaswag_local.yaml").write_text(TASK_YAML.format(path=path))
    pages = wikitext.documents(raw.read_text(encoding="utf-8"))
    docs = out / "wikitext2_test_docs.jsonl"
    docs.write_text("".join(json.dumps({"page": p}) + "\n" for p in pages), encoding="utf-8")
    shutil.copy(lm_eval_wikitext.__file__, out / "preprocess_wikitext.py")
    (out / "wikitext2_local.yaml").write_text(WIKITEXT_YAML.format(path=docs))
    return str(out)


class GptJaxLM(TemplateLM):
    """lm-eval's LM over (model config, params, tokenizer): loglikelihood (multiple choice),
    loglikelihood_rolling (perplexity) and generate_until (greedy)."""

    def __init__(self, cfg, params, tokenizer, window: int = 1024, max_gen_toks: int = 256):
        super().__init__()
        import jax  # lazy: JAX only when a model is evaluated

        if cfg.pos != "rope":
            window = min(window, cfg.block_size)
        self.cfg, self.tok, self.window, self.max_gen_toks = cfg, tokenizer, window, max_gen_toks
        self.max_length = window - 1  # lm-eval's API models: tokens a request keeps (one left to generate)
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
            limit = self.max_length
            ids = (context_enc + continuation_enc)[-limit:]
            # a continuation longer than that loses its first tokens: the first kept one is context
            ctxlen = max(1, len(ids) - len(continuation_enc))
            row = np.zeros((1, bucket(len(ids), self.window)), np.int32)
            row[0, : len(ids)] = ids
            chosen, top_lp, _ = sl.score_jit(self.cfg, self.params, row)
            chosen, top = np.asarray(chosen[0]), np.asarray(top_lp[0, :, 0])
            # token t's logprob sits at position t - 1 (the server's token_logprobs[t])
            lps = [float(chosen[t - 1]) for t in range(ctxlen, len(ids))]
            greedy = all(lp == float(top[t - 1]) for lp, t in zip(lps, range(ctxlen, len(ids))))
            out.append((sum(lps), greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False, **kwargs):
        """Per document, the summed log-likelihood over lm-eval's disjoint rolling windows (its API
        models' choice: max_seq_len = max_length - 1, context_len = 1)."""
        out = []
        for (string,) in [r.args for r in requests]:
            windows = get_rolling_token_windows(self.tok_encode(string), self.prefix_token_id, self.max_length - 1, 1)
            pairs = [(None, *make_disjoint_window(w)) for w in windows]
            out.append(sum(ll for ll, _ in self._loglikelihood_tokens(pairs)))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False, **kwargs):
        """Greedy continuations cut at the first `until` string, at most max_gen_toks tokens (the context
        left-truncated to fit the window, as lm-eval's API models do)."""
        from gpt_jax.generation.engine import generate  # lazy: JAX only when a model is evaluated
        from gpt_jax.generation.options import GenerateOptions, undecodable_ids  # lazy: as above

        out = []
        eos = getattr(self.tok, "eos_id", None)
        for context, gen_kwargs in [r.args for r in requests]:
            kw = dict(gen_kwargs or {})
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_gen = int(kw.pop("max_gen_toks", self.max_gen_toks))
            if kw.get("do_sample") or float(kw.get("temperature") or 0) > 0:
                raise ValueError(f"generate_until here is greedy only; got {gen_kwargs}")
            if not 1 <= max_gen < self.max_length:
                raise ValueError(f"max_gen_toks={max_gen} must be in [1, {self.max_length}) for --window={self.window}")
            ids = self.tok_encode(context)[-(self.max_length - max_gen) :] or [self.prefix_token_id]
            options = GenerateOptions(
                max_new_tokens=max_gen,
                temperature=0,
                stop_ids=() if eos is None else (eos,),
                stop_strings=tuple(until),
                decode=self.tok.decode,
                banned_ids=undecodable_ids(self.tok.vocab_size, self.cfg.vocab_size),
            )
            new = [int(t) for t in generate(self.cfg, self.params, [ids], options)[0] if t >= 0 and t != eos]
            text = self.tok.decode(new)
            for stop in until:
                text = text.split(stop)[0]
            out.append(text)
        return out


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str):
    """lm-eval's task index (~15 s to build: it reads every task yaml), once per include path."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def evaluate(lm, tasks: list[str], limit: int | None, include_path: str) -> dict:
    from lm_eval import simple_evaluate

    res = simple_evaluate(
        model=lm, tasks=tasks, limit=limit, task_manager=task_manager(include_path), bootstrap_iters=0
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
        eos = load_tokenizer(args.workdir).eos_id
        prefix = eos if eos is not None else 0
        lm = LocalCompletionsAPI(
            base_url=args.url.rstrip("/") + "/v1/completions",
            model=name,
            tokenizer_backend="remote",
            max_length=args.window,  # lm-eval keeps max_length - 1 tokens: the server's window - 1
            custom_prefix_token_id=prefix,  # GptJaxLM's: eos, else 0 (the server reports no eos then)
        )
    else:
        from gpt_jax.workdir import load_run  # lazy: loads the checkpoint stack

        _, cfg, params, tok = load_run(args.workdir)
        lm = GptJaxLM(cfg, params, tok, args.window)
    print(json.dumps(evaluate(lm, args.tasks.split(","), args.limit, include), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
