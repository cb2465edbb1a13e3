"""A run's newest good checkpoint scored on its task's validation batches (what gpt_jax.evaluate prints)."""

from __future__ import annotations

import ml_collections

from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, restore_target
from gpt_jax.compression.quantize import dequantize_tree
from gpt_jax.compression.stored import is_compressed
from gpt_jax.trainer import Trainer
from gpt_jax.workdir import load_run_at, read_run_file


def evaluate_workdir(workdir: str, eval_batches: int | None = None) -> dict:
    config = ml_collections.ConfigDict(read_run_file(workdir, "config.json"))
    if eval_batches:
        config.train.eval_batches = eval_batches
    tr = Trainer(config, workdir, write=False)
    if is_compressed(workdir):  # params only (int8/int4 ones scored with their weights dequantized)
        _, _, params, _, step = load_run_at(workdir)
        return _result(config, tr, step, tr.evaluate(dequantize_tree(params)))
    with Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True) as ckpt:
        # The newest checkpoint that verifies and reads; a corrupt one is named and skipped.
        state, meta, _ = ckpt.restore_latest_good(restore_target(tr.abstract, tr.shardings))
    return _result(config, tr, meta["step"], tr.evaluate(state.params, state.frozen))


def _result(config, tr, step, metrics) -> dict:
    out = {"step": step, **metrics}
    if tr.task.name == "lm":
        out["eval_tokens"] = config.train.eval_batches * config.train.batch_size * tr.model_cfg.block_size
    return out
