"""Evaluate a run's newest good checkpoint on its validation split (val_loss; classifiers add val_accuracy).

  python -m gpt_jax.evaluate --workdir=runs/shakespeare_char_cpu [--eval_batches=200]

Reads the run's saved config.json, so it needs nothing else; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from gpt_jax.cli import flags
from gpt_jax.evaluation import evaluate_workdir

USAGE = "usage: python -m gpt_jax.evaluate --workdir=W [--eval_batches=N]"
SPEC = [
    flags.Flag("workdir", help="a run directory written by gpt_jax.main", required=True),
    flags.Flag("eval_batches", int, 0, "validation batches (0: the run's train.eval_batches)"),
]


def evaluate(argv: Sequence[str]) -> int:
    _, values = flags.parse(argv, SPEC, usage=USAGE)
    print(json.dumps(evaluate_workdir(values["workdir"], values["eval_batches"] or None)))
    return 0


def main(argv: Sequence[str]) -> int:
    return flags.run(evaluate, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
