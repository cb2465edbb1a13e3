"""The training loop: data -> sharded jitted steps -> eval, logs, checkpoints, resume, sample."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tqdm

from gpt_jax import flops, run_config, tasks
from gpt_jax import sharding as shd
from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, install_sigterm_handler, restore_target
from gpt_jax.config import ModelConfig, model_config_from
from gpt_jax.generate import generate
from gpt_jax.metrics import MetricWriter
from gpt_jax.optim import make_optimizer
from gpt_jax.train import (
    TrainState,
    create_state,
    create_train_state,
    make_eval,
    make_step,
    scan_steps,
    task_state_shardings,
)

log = logging.getLogger(__name__)


def build_model_config(config: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
    cfg = model_config_from(config.model, vocab_size=config.model.vocab_size or vocab_size)
    if cfg.vocab_size < vocab_size:
        raise ValueError(
            f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's {vocab_size}; "
            "raise it or leave it unset"
        )
    return cfg


def next_chunk(step: int, config: ml_collections.ConfigDict) -> int:
    """Steps to run in the next compiled call: up to steps_per_call, stopping at every event boundary."""
    t = config.train
    bounds = [t.num_steps]
    for every in (t.log_every, t.eval_every, config.checkpoint.every):
        if every and every > 0:
            bounds.append((step // every + 1) * every)
    return max(1, min(t.steps_per_call, min(bounds) - step))


def restore_or_init(ckpt: Checkpointer, model_cfg: ModelConfig, tx, seed: int, abstract, shardings, init=None):
    """(state, meta) from the latest checkpoint, or (`init()` / a fresh LM state, None) when there is none."""
    latest = ckpt.latest_step()
    if latest is None:
        return (init() if init else create_train_state(model_cfg, tx, seed, shardings)), None
    return ckpt.restore(restore_target(abstract, shardings), latest)


class Trainer:
    """Set-up shared by training and its tests: the task (data, model, loss), mesh, jitted steps, state."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, write: bool = True):
        self.config, self.workdir = config, pathlib.Path(workdir)
        shd.maybe_initialize_distributed()
        self.task = tasks.make_task(config, self.workdir)
        self.tokenizer, self.model_cfg = self.task.tokenizer, self.task.model_cfg
        write = write and jax.process_index() == 0
        run_config.check_and_save(self.workdir, config, dataclasses.asdict(self.model_cfg), save=write)
        if write:
            self.tokenizer.save(self.workdir)

        self.mesh = shd.make_mesh({a: config.mesh[a] for a in shd.MESH_AXES})
        t = config.train
        if t.batch_size % t.grad_accum:
            raise ValueError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
        data_shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if (t.batch_size // t.grad_accum) % data_shards:
            raise ValueError(
                f"micro-batch {t.batch_size // t.grad_accum} is not divisible by the {data_shards} "
                "data-parallel shards (mesh data*fsdp); change train.batch_size or config.mesh"
            )
        tx, self.schedule = make_optimizer(config.optim, t.num_steps)
        self.tx = self.task.wrap_optimizer(tx)
        self.abstract, self.shardings = task_state_shardings(self.task.init, self.model_cfg, self.tx, self.mesh)
        example = self.task.train_batches(0, 1, jax.process_index(), jax.process_count())
        self.batch_sharding = {k: shd.batch_sharding(self.mesh, ndim=v.ndim, leading=1) for k, v in example.items()}
        self.eval_data = self.to_device(self.task.eval_batches(jax.process_index(), jax.process_count()))
        eval_sharding = {k: shd.batch_sharding(self.mesh, ndim=v.ndim, leading=1) for k, v in self.eval_data.items()}
        train_step = make_step(self.task.loss(), self.tx, self.schedule, grad_accum=t.grad_accum)
        with self.rules():
            self.train_fn = jax.jit(
                scan_steps(train_step),
                in_shardings=(self.shardings, self.batch_sharding),
                out_shardings=(self.shardings, shd.replicated(self.mesh)),
                donate_argnums=0,
            )
            self.eval_fn = jax.jit(
                make_eval(self.task.metrics()),
                in_shardings=(self.shardings.params, self.shardings.frozen, eval_sharding),
                out_shardings=shd.replicated(self.mesh),
            )

    def init_state(self) -> TrainState:
        """A fresh state: random init, with a task's pretrained weights grafted in (placed per shardings)."""
        pretrained = self.task.pretrained()
        return create_state(self.task.init, self.tx, self.config.seed, self.shardings, *pretrained)

    def rules(self):
        """Mesh + logical-axis rules in scope while tracing (for the activation constraints)."""
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(shd.DEFAULT_RULES))
        return stack

    def to_device(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {
            k: jax.make_array_from_process_local_data(shd.batch_sharding(self.mesh, ndim=v.ndim, leading=1), v)
            for k, v in host_batch.items()
        }

    def batches(self, step: int, k: int) -> dict[str, jax.Array]:
        return self.to_device(self.task.train_batches(step, k, jax.process_index(), jax.process_count()))

    def run_steps(self, state: TrainState, step: int, k: int):
        with self.rules():
            return self.train_fn(state, self.batches(step, k))

    def evaluate(self, params, frozen=None) -> dict[str, float]:
        """{metric: value} on the task's validation batches (val_loss, and e.g. val_accuracy)."""
        with self.rules():
            got = self.eval_fn(params, {} if frozen is None else frozen, self.eval_data)
        return {k: float(v) for k, v in jax.device_get(got).items()}


class EarlyStopping:
    """Best-so-far on `task.early_stop_metric` (a `val_*` key; loss: lower is better, else higher), the best
    state kept in <workdir>/best apart from the latest checkpoints, and a stop after `patience` evals
    without improvement. Stateless across restarts: the best value and step live in best/'s metadata."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path):
        task = config.get("task") or {}
        self.metric, self.patience = task.get("early_stop_metric"), int(task.get("patience") or 0)
        self.eval_every = config.train.eval_every
        self.ckpt = Checkpointer(workdir / "best", save_every=0, keep=1, async_save=False) if self.metric else None
        self.best, self.best_step = None, None
        if self.ckpt and self.ckpt.latest_step() is not None:
            self.best_step = self.ckpt.latest_step()
            self.best = float(self.ckpt.read_meta(self.best_step)["value"])

    def better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if "loss" in self.metric else value > self.best

    def update(self, step: int, record: dict, state) -> bool:
        """Record an eval; True when training should stop."""
        if not self.metric:
            return False
        if self.metric not in record:
            raise ValueError(f"task.early_stop_metric={self.metric!r} is not an eval metric; this task reports {sorted(record)}")
        if self.better(record[self.metric]):
            self.best, self.best_step = float(record[self.metric]), step
            self.ckpt.maybe_save(step, state, {"step": step, "metric": self.metric, "value": self.best}, force=True)
            self.ckpt.wait()
        evals_since = (step - self.best_step) // max(self.eval_every, 1)
        return self.patience > 0 and evals_since >= self.patience

    def best_state(self, abstract, shardings):
        if not self.ckpt or self.best_step is None:
            return None
        return self.ckpt.restore(restore_target(abstract, shardings), self.best_step)[0]

    def close(self):
        if self.ckpt:
            self.ckpt.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Train (or resume) in `workdir`; returns the final summary (also written to summary.json)."""
    t0 = time.perf_counter()
    tr = Trainer(config, workdir)
    t, cfg = config.train, tr.model_cfg
    ckpt = Checkpointer(
        checkpoint_dir(tr.workdir),
        save_every=config.checkpoint.every,
        keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save,
    )
    state, meta = restore_or_init(ckpt, cfg, tr.tx, config.seed, tr.abstract, tr.shardings, init=tr.init_state)
    step = int(jax.device_get(state.step))
    if meta is not None:
        log.info("resumed from step %d in %s", step, tr.workdir)
    writer = MetricWriter(tr.workdir, resume_step=step if meta is not None else None)
    stopper = EarlyStopping(config, tr.workdir)
    preempted = install_sigterm_handler()
    tokens_per_step = t.batch_size * tr.task.seq_len  # a classifier's rows are max_len, not block_size
    peak = (t.peak_flops or flops.device_peak_flops(cfg.dtype)) * jax.device_count()
    flops_per_token = flops.train_flops_per_token(cfg, tr.task.seq_len, tr.task.lm_head)
    bar = tqdm.tqdm(total=t.num_steps, initial=step, disable=jax.process_index() != 0, dynamic_ncols=True)
    rates, status, last = [], "completed", None
    mark_step, mark_time = step, time.perf_counter()
    try:
        while step < t.num_steps:
            k = next_chunk(step, config)
            state, metrics = tr.run_steps(state, step, k)
            step += k
            record = None
            if step % t.log_every == 0 or step == t.num_steps:
                m = jax.device_get(metrics)  # the only host sync between logs
                now = time.perf_counter()
                rate = (step - mark_step) * tokens_per_step / (now - mark_time)
                if mark_step != int(meta["step"] if meta else 0) or step - mark_step > k:
                    rates.append(rate)  # the first interval after start includes compilation
                mark_step, mark_time = step, now
                record = {
                    "train_loss": float(m["train_loss"][-1]),
                    "lr": float(m["lr"][-1]),
                    "grad_norm": float(m["grad_norm"][-1]),
                    "tokens_per_sec": rate,
                    "mfu": rate * flops_per_token / peak,
                }
            stop_early = False
            if (t.eval_every and step % t.eval_every == 0) or step == t.num_steps:
                record = record or {}
                record.update(tr.evaluate(state.params, state.frozen))
                record["val_ppl"] = float(np.exp(record["val_loss"]))
                stop_early = stopper.update(step, record, state)
                mark_time = time.perf_counter()  # eval time is not training time
            if record:
                writer.write(step, record)
                last = {**(last or {}), **record}
                bar.set_postfix({k_: f"{v:.4g}" for k_, v in record.items() if k_ in ("train_loss", "val_loss")})
            bar.update(k)
            ckpt.maybe_save(step, state, {"step": step, "seed": config.seed}, force=step == t.num_steps or stop_early)
            if stop_early:
                status = "early_stopped"
                log.info("early stop at step %d: no better %s for %d evals", step, stopper.metric, stopper.patience)
                break
            if preempted.reached(step):
                ckpt.maybe_save(step, state, {"step": step, "seed": config.seed}, force=True)
                status = "preempted"
                break
    finally:
        bar.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
        preempted.uninstall()
    if last is None or "val_loss" not in last:  # e.g. restarted an already finished run
        last = {**(last or {}), **tr.evaluate(state.params, state.frozen)}
    steady = statistics.median(rates) if rates else None
    summary = {
        "status": status,
        "step": step,
        "train_loss": (last or {}).get("train_loss"),
        **{k: v for k, v in last.items() if k.startswith("val_") and k != "val_ppl"},
        "tokens_per_sec": steady,
        "mfu": steady * flops_per_token / peak if steady else None,
        "peak_flops": peak,
        "wall_s": time.perf_counter() - t0,
        "devices": jax.device_count(),
        "backend": jax.default_backend(),
    }
    if stopper.metric:
        summary.update(best_metric=stopper.metric, best_value=stopper.best, best_step=stopper.best_step)
    if status in ("completed", "early_stopped"):
        best = stopper.best_state(tr.abstract, tr.shardings)
        summary.update(tr.task.finish(tr, state, tr.workdir, best_state=best))
    stopper.close()
    if jax.process_index() == 0:
        (tr.workdir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "sample"}, indent=2))
    return summary


def sample_text(tr: Trainer, params, s: ml_collections.ConfigDict) -> str:
    """The end-of-run sample: KV-cache generation on the training mesh, sliding past block_size."""
    ids = generate(
        tr.model_cfg,
        params,
        [tr.tokenizer.encode(s.prompt)],
        max_new_tokens=s.num_tokens,
        temperature=s.temperature,
        top_k=s.top_k,
        seed=tr.config.seed,
        # objective sentinels (fim/mlm) follow the tokenizer's ids and cannot be decoded
        banned_ids=tuple(range(tr.tokenizer.vocab_size, tr.model_cfg.vocab_size)),
        slide=True,
        mesh=tr.mesh,
    )
    return s.prompt + tr.tokenizer.decode(ids[0])
