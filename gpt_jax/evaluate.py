"""Evaluate a run's latest checkpoint on its validation split (val_loss; classifiers add val_accuracy).

  python -m gpt_jax.evaluate --workdir=runs/shakespeare_char_cpu [--eval_batches=200]

Reads the run's saved config.json, so it needs nothing else; prints one JSON line.
"""

from __future__ import annotations

import json
import sys

import ml_collections


def evaluate_workdir(workdir: str, eval_batches: int | None = None) -> dict:
    from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, restore_target
    from gpt_jax.trainer import Trainer
    from gpt_jax.workdir import read_run_file

    config = ml_collections.ConfigDict(read_run_file(workdir, "config.json"))
    if eval_batches:
        config.train.eval_batches = eval_batches
    tr = Trainer(config, workdir, write=False)
    with Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True) as ckpt:
        latest = ckpt.latest_step()
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint in {checkpoint_dir(workdir)}")
        state, meta = ckpt.restore(restore_target(tr.abstract, tr.shardings), latest)
    metrics = tr.evaluate(state.params, state.frozen)
    out = {"step": meta["step"], **metrics}
    if tr.task.name == "lm":
        out["eval_tokens"] = config.train.eval_batches * config.train.batch_size * tr.model_cfg.block_size
    return out


def main(argv: list[str]) -> int:
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    if "workdir" not in flags:
        print(
            "error: --workdir is required; usage: python -m gpt_jax.evaluate --workdir=W [--eval_batches=N]",
            file=sys.stderr,
        )
        return 2
    try:
        result = evaluate_workdir(flags["workdir"], int(flags.get("eval_batches", 0)) or None)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
