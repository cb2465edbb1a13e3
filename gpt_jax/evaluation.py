"""What gpt_jax.evaluate prints: a run's newest good checkpoint scored on its task's validation batches
(`evaluate_workdir`; a classify run's test accuracy too), or on an eval task of gpt_jax.eval_tasks (`evaluate_task`: HellaSwag, WikiText-2)."""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, restore_target
from gpt_jax.compression import classify_run
from gpt_jax.compression.quantize import dequantize_tree
from gpt_jax.compression.score import evaluate_unsharded, has_w8a8
from gpt_jax.compression.stored import is_compressed
from gpt_jax.eval_tasks import registry as eval_tasks
from gpt_jax.eval_tasks.base import EvalOptions
from gpt_jax.eval_tasks.scoring import Scorer
from gpt_jax.trainer import Trainer
from gpt_jax.workdir import load_run_at, read_run_file


def evaluate_workdir(workdir: str, eval_batches: int | None = None) -> dict:
    config = ml_collections.ConfigDict(read_run_file(workdir, "config.json"))
    if eval_batches:
        config.train.eval_batches = eval_batches
    tr = Trainer(config, workdir, write=False)
    if is_compressed(workdir):  # params only (int8/int4 ones scored with their weights dequantized)
        if tr.task.name == "classify":  # {"backbone", "head"}: load_run hands out the backbone alone
            params, step = classify_run.load_params(workdir)
        else:
            _, _, params, _, step = load_run_at(workdir)
        if has_w8a8(params):  # int8 activations too: scored unsharded (gpt_jax.compression.score)
            return _result(config, tr, step, evaluate_unsharded(tr, params), params)
        params = dequantize_tree(params)
        return _result(config, tr, step, tr.evaluate(params), params)
    with Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True) as ckpt:
        # The newest checkpoint that verifies and reads; a corrupt one is named and skipped.
        state, meta, _ = ckpt.restore_latest_good(restore_target(tr.abstract, tr.shardings))
    return _result(config, tr, meta["step"], tr.evaluate(state.params, state.frozen), state.params, state.frozen)


def _result(config, tr, step, metrics, params=None, frozen=None) -> dict:
    out = {"step": step, **metrics}
    if tr.task.name == "lm":
        out["eval_tokens"] = config.train.eval_batches * config.train.batch_size * tr.model_cfg.block_size
    labels = tr.task.data["test"]["labels"] if tr.task.name == "classify" and "test" in tr.task.data else None
    if labels is not None and labels.min() >= 0:  # a labelled test split: accuracy as the run's report.json
        # host copies: a compressed run's params sit on one device, not on the trainer's mesh
        params, frozen = jax.device_get((params, {} if frozen is None else frozen))
        preds = tr.task.predict(tr, params, frozen, "test")
        out["test_accuracy"] = float(np.mean(preds == labels))
    return out


def evaluate_task(
    workdir: str, task: str, options: EvalOptions, *, window: int | None = None, batch_tokens: int = 8192
) -> dict:
    """An eval task on the run's newest good checkpoint. window: tokens a scored sequence may span, as
    the server's / lm-eval adapter's --window (default: the model's block_size)."""
    spec = eval_tasks.get(task)  # an unknown name fails before the checkpoint loads
    if window is not None and window < 3:
        raise ValueError(f"--window={window} must be >= 3")
    config, cfg, params, tok, step = load_run_at(workdir)
    if (config.get("model") or {}).get("family", "gpt") != "gpt":
        raise ValueError(f"--task={task} scores text with the gpt family; this run's family is {config.model.family}")
    if is_compressed(workdir):
        params = dequantize_tree(params)
    t0 = time.perf_counter()
    scorer = Scorer(cfg, params, window or cfg.block_size, batch_tokens)
    out = {"step": step, **spec.run(scorer, tok, options)}
    out.update(
        window=scorer.window, compiled_programs=scorer.compilations(), seconds=round(time.perf_counter() - t0, 1)
    )
    return out
