"""Evaluate a run's newest good checkpoint: its validation loss (default), or an eval task.

  python -m gpt_jax.evaluate --workdir=runs/shakespeare_char_cpu [--eval_batches=200]
  python -m gpt_jax.evaluate --workdir=W --task=hellaswag|wikitext2 [--limit=N] [--window=W]
      [--data_dir=D] [--skip_unencodable]

Reads the run's saved config.json, so it needs nothing else; prints one JSON line. A classify run
(compressed or not) gives val_loss and val_accuracy on its validation (SST-2: dev) split, and
test_accuracy where its test split is labelled. Tasks (gpt_jax/eval_tasks):
hellaswag (acc, acc_norm) and wikitext2 (word/byte perplexity, bits per byte), as lm-eval defines them,
on the staged files under --data_dir, else $GPT_JAX_DATA_DIR, else ../shared/data.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from gpt_jax.cli import flags
from gpt_jax.eval_tasks.base import EvalOptions
from gpt_jax.evaluation import evaluate_task, evaluate_workdir

USAGE = "usage: python -m gpt_jax.evaluate --workdir=W [--eval_batches=N] [--task=hellaswag|wikitext2 --limit=N]"
SPEC = [
    flags.Flag("workdir", help="a run directory written by gpt_jax.main", required=True),
    flags.Flag("eval_batches", int, 0, "validation batches (0: the run's train.eval_batches)"),
    flags.Flag("task", str, "val", "val (validation loss) | hellaswag | wikitext2"),
    flags.Flag("limit", int, 0, "score only the first N rows / documents (0: all)"),
    flags.Flag("window", int, 0, "tokens a scored sequence spans, as serve's --window (0: block_size)"),
    flags.Flag("data_dir", str, None, "folder of the staged eval files (default $GPT_JAX_DATA_DIR)"),
    flags.Flag("skip_unencodable", bool, False, "skip rows the tokenizer cannot encode (else an error)"),
    flags.Flag("batch_tokens", int, 8192, "tokens per compiled scoring call"),
]


def evaluate(argv: Sequence[str]) -> int:
    _, values = flags.parse(argv, SPEC, usage=USAGE)
    if values["task"] == "val":
        print(json.dumps(evaluate_workdir(values["workdir"], values["eval_batches"] or None)))
        return 0
    for name in ("limit", "window", "batch_tokens"):
        if values[name] < 0 or (name == "batch_tokens" and values[name] < 16):
            raise ValueError(f"--{name}={values[name]} is out of range; see --help")
    options = EvalOptions(values["limit"] or None, values["data_dir"], values["skip_unencodable"])
    result = evaluate_task(
        values["workdir"], values["task"], options, window=values["window"] or None, batch_tokens=values["batch_tokens"]
    )
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str]) -> int:
    return flags.run(evaluate, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
