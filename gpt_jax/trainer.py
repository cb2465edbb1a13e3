"""The training loop: data -> sharded jitted steps -> eval, logs, checkpoints, resume, sample."""

from __future__ import annotations

import errno
import json
import logging
import math
import pathlib
import shutil
import signal
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tqdm

from gpt_jax import checkpoint_tree, config_checks, flops, run_config
from gpt_jax import sharding as shd
from gpt_jax.attention_kernels import check_kernel
from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, restore_target
from gpt_jax.data import iterator_state
from gpt_jax.early_stopping import EarlyStopping
from gpt_jax.metrics import MetricWriter
from gpt_jax.models import registry as models
from gpt_jax.nonfinite import NonFiniteError, NonFiniteGuard
from gpt_jax.optim import make_optimizer
from gpt_jax.paths import as_path, is_local
from gpt_jax.preemption import install_sigterm_handler
from gpt_jax.tasks.registry import make_task
from gpt_jax.train import (
    Optimizers,
    TrainState,
    Update,
    create_state,
    make_eval,
    make_updates_step,
    scan_steps,
    task_state_shardings,
)
from gpt_jax.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)


def next_chunk(step: int, config: ml_collections.ConfigDict) -> int:
    """Steps to run in the next compiled call: up to steps_per_call, stopping at every event boundary."""
    t = config.train
    bounds = [t.num_steps]
    for every in (t.log_every, t.eval_every, config.checkpoint.every):
        if every and every > 0:
            bounds.append((step // every + 1) * every)
    return max(1, min(t.steps_per_call, min(bounds) - step))


def restore_or_init(ckpt: Checkpointer, abstract, shardings, init, task=None):
    """(state, meta) from the newest usable checkpoint (a corrupt newer one is named, moved aside to
    <step>.corrupt and skipped), or (`init()`, None) when there is none. A checkpoint of another state
    tree (a changed optimizer or task) is a config error, checked first, never taken for corruption.
    A `task` with a sequential data stream gets the stream's saved position back too."""
    steps = ckpt.steps()
    if not steps:
        return init(), None
    checkpoint_tree.check_compatible_newest(abstract, [ckpt.directory / str(s) for s in reversed(steps)])
    items, box = iterator_state.restore_items(task)
    iterator_state.check_saved(ckpt.directory / str(steps[-1]), items)
    state, meta, _ = ckpt.restore_latest_good(restore_target(abstract, shardings), items)
    iterator_state.apply(task, box)
    return state, meta


class Trainer:
    """Set-up shared by training and its tests: the task (data, model, loss), mesh, jitted steps, state."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, write: bool = True):
        self.config, self.workdir = config, as_path(workdir)
        shd.maybe_initialize_distributed()
        self.task = make_task(config, self.workdir)
        # An image-only task (a GAN) has no tokenizer: None, and nothing is saved for it.
        self.tokenizer, self.model_cfg = getattr(self.task, "tokenizer", None), self.task.model_cfg
        self.family = models.family_of(config.model)
        # Checks only: nothing is written until the state is restored or initialised (save_run_files),
        # so a refused resume leaves the workdir as it was.
        self.model_fields = models.saved_fields(self.family, self.model_cfg)
        run_config.check_model(self.workdir, self.model_fields)
        self.changes = run_config.check_resume(self.workdir, config) if write else {}
        self.write = write and jax.process_index() == 0
        shd.sync_processes("workdir read")  # every process read tokenizer/configs before process 0 rewrites them

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
        tx, self.schedule = make_optimizer(config.optim, t.num_steps, self.family.matrix_dims)
        # A task with several sub-models (and optimizers) gives its own updates; one model is one update.
        updates = getattr(self.task, "updates", None)
        self.updates = (
            updates(tx, self.schedule)
            if updates
            else [Update(self.task.loss(), self.task.wrap_optimizer(tx), self.schedule)]
        )
        self.tx = Optimizers(tuple(self.updates))
        reference = self.family.abstract_params(self.model_cfg)
        self.abstract, self.shardings = task_state_shardings(self.task.init, reference, self.tx, self.mesh)
        example = self.task.train_batches(0, 1, jax.process_index(), jax.process_count())
        if jax.process_count() > 1:
            rows = next(iter(example.values())).shape[1]
            log.info(
                "process %d of %d loads %d of the %d rows of each batch",
                jax.process_index(),
                jax.process_count(),
                rows,
                t.batch_size,
            )
        self.batch_sharding = {k: shd.batch_sharding(self.mesh, ndim=v.ndim, leading=1) for k, v in example.items()}
        self.eval_data = self.to_device(self.task.eval_batches(jax.process_index(), jax.process_count()))
        eval_sharding = {k: shd.batch_sharding(self.mesh, ndim=v.ndim, leading=1) for k, v in self.eval_data.items()}
        skip = t.get("on_nonfinite", "stop") == "skip"  # .get: config.json files from before the key
        train_step = make_updates_step(self.updates, grad_accum=t.grad_accum, skip_nonfinite=skip)
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

    def save_run_files(self, step: int) -> None:
        """config.json, model_config.json, the tokenizer and a run_history.jsonl line (process 0 only)."""
        if self.write:
            run_config.save_run(self.workdir, self.config, self.model_fields, step=step, changes=self.changes)
            if self.tokenizer is not None:
                self.tokenizer.save(self.workdir)

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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Train (or resume) in `workdir` holding its lock (gpt_jax.workdir_lock), taken before anything is read
    or written there: a second trainer on the same workdir is refused with WorkdirLockedError."""
    config_checks.validate(config)  # value ranges first: nothing is read or written for a bad config
    shd.maybe_initialize_distributed()  # process_index needs the cluster; only process 0 takes the lock
    model = config.get("model") or {}
    check_kernel(model.get("attention", "auto"), jax.default_backend(), model.get("dtype", "float32"))
    if jax.process_index() == 0:
        run_config.check_writable(as_path(workdir))  # the lock file is the first write
    with WorkdirLock(workdir, enabled=jax.process_index() == 0):
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
    """Train (or resume) in `workdir`; returns the final summary (also written to summary.json).

    Every check (value ranges, the workdir's model and trajectory, restorability) runs before anything
    is written. A non-finite loss raises NonFiniteError after saving nothing (train.on_nonfinite).
    """
    t0 = time.perf_counter()
    tr = Trainer(config, workdir)
    t = config.train
    ckpt = Checkpointer(
        checkpoint_dir(tr.workdir),
        save_every=config.checkpoint.every,
        keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save,
    )
    state, meta = restore_or_init(ckpt, tr.abstract, tr.shardings, tr.init_state, tr.task)
    step = int(jax.device_get(state.step))
    if meta is not None:
        log.info("resumed from step %d in %s", step, tr.workdir)
    tr.save_run_files(step)
    writer = MetricWriter(tr.workdir, resume_step=step if meta is not None else None)
    stopper = EarlyStopping(config, tr.workdir)
    guard = NonFiniteGuard(
        t.on_nonfinite,
        t.max_nonfinite_skips,
        skipped=(meta or {}).get("nonfinite_skips", 0),
        last_good=lambda: _describe_latest(ckpt),
    )
    preempted, interrupted = install_sigterm_handler(), install_sigterm_handler(signal.SIGINT)
    try:
        loop = _Loop(tr, config, ckpt, writer, stopper, guard, meta)
        state, step, status = loop.run(state, step, lambda s: preempted.reached(s) or interrupted.is_set())
        if status == "preempted" and interrupted.is_set():
            status = "interrupted"
    except NonFiniteError as e:
        _write_summary(tr.workdir, {"status": "stopped_nonfinite", "error": str(e)})  # not the last run's "completed"
        raise
    finally:
        ckpt.wait()
        ckpt.close()
        writer.close()
        preempted.uninstall()
        interrupted.uninstall()
    last = loop.last
    if last is None or "val_loss" not in last:  # e.g. restarted an already finished run
        last = {**(last or {}), **tr.evaluate(state.params, state.frozen)}
    steady = statistics.median(loop.rates) if loop.rates else None
    summary = {
        "status": status,
        "step": step,
        "train_loss": (last or {}).get("train_loss"),
        **{k: v for k, v in last.items() if k.startswith("val_") and k != "val_ppl"},
        "tokens_per_sec": steady,
        "mfu": steady * loop.flops_per_token / loop.peak if steady else None,
        "mfu_attention": flops.MFU_ATTENTION,  # the causal-attention FLOPs convention of "mfu"
        "mfu_causal": steady * loop.flops_causal / loop.peak if steady else None,
        "peak_flops": loop.peak,
        "wall_s": time.perf_counter() - t0,
        "devices": jax.device_count(),
        "backend": jax.default_backend(),
    }
    if guard.skipped:
        summary["nonfinite_skipped"] = guard.skipped
    if stopper.metric:
        summary.update(best_metric=stopper.metric, best_value=stopper.best, best_step=stopper.best_step)
    if status in ("completed", "early_stopped"):
        best = stopper.best_state(tr.abstract, tr.shardings)
        summary.update(tr.task.finish(tr, state, tr.workdir, best_state=best))
    stopper.close()
    _write_summary(tr.workdir, {k: v for k, v in summary.items() if k != "sample"})
    return summary


def _write_summary(workdir: pathlib.Path, summary: dict) -> None:
    if jax.process_index() == 0:
        run_config.write_atomic(workdir / "summary.json", json.dumps(summary, indent=2))


def check_free_space(directory: pathlib.Path, state_bytes: int, step: int) -> None:
    """Refuse a save the disk cannot hold before Orbax starts writing it (a failed write leaves only a
    temporary directory, but Orbax's threads fill the terminal with tracebacks on the way)."""
    if not is_local(directory):  # a bucket has no free-space figure
        return
    need = int(state_bytes * 1.25) + (1 << 20)  # + metadata, JSON, a margin
    free = shutil.disk_usage(directory if directory.exists() else directory.parent).free
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"not enough free space for checkpoint {step}: {free / 2**20:.1f} MiB free, ~{need / 2**20:.1f} MiB needed",
            str(directory),
        )


def _describe_latest(ckpt: Checkpointer) -> str | None:
    ckpt.wait()  # an in-flight save of a finite state counts once it is committed
    latest = ckpt.latest_step()
    return None if latest is None else f"{ckpt.directory / str(latest)} (step {latest})"


class _Loop:
    """The steps between start and stop: chunks of compiled steps, logs, evals, checkpoints.

    The host syncs only at logs, evals and saves; the non-finite flags of the other calls are read one
    call late (gpt_jax.nonfinite), and every save first reads them all, so no non-finite state is saved.
    """

    def __init__(self, tr: Trainer, config, ckpt: Checkpointer, writer: MetricWriter, stopper, guard, meta):
        self.tr, self.config, self.ckpt = tr, config, ckpt
        self.writer, self.stopper, self.guard = writer, stopper, guard
        t, cfg = config.train, tr.model_cfg
        self.tokens_per_step = t.batch_size * tr.task.seq_len  # a classifier's rows are max_len, not block_size
        self.peak = (t.peak_flops or flops.device_peak_flops(getattr(cfg, "dtype", "float32"))) * jax.device_count()
        # forward + backward = 3x the family's forward FLOPs
        self.flops_per_token = 3 * tr.family.flops_per_token(cfg, tr.task.seq_len, tr.task.lm_head)
        self.flops_causal = self.flops_per_token - 3 * flops.causal_discount(cfg, tr.task.seq_len)
        log.info(
            "MFU counts attention at %s length (%.4g train FLOPs/token; MaxText's causal count %.4g -> mfu_causal)",
            flops.MFU_ATTENTION,
            self.flops_per_token,
            self.flops_causal,
        )
        self.start_step = int(meta["step"]) if meta else 0
        self.state_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tr.abstract))
        self.rates, self.last = [], None

    def save(self, step: int, state, *, force: bool) -> None:
        if force or (self.ckpt.save_every > 0 and step % self.ckpt.save_every == 0):
            self.guard.check()
            if jax.process_index() == 0:
                check_free_space(self.ckpt.directory, self.state_bytes, step)
            meta = {"step": step, "seed": self.config.seed, "nonfinite_skips": self.guard.skipped}
            self.ckpt.maybe_save(step, state, meta, force=force, items=iterator_state.save_items(self.tr.task))

    def run(self, state, step: int, stop_requested) -> tuple[Any, int, str]:
        tr, t, guard = self.tr, self.config.train, self.guard
        bar = tqdm.tqdm(total=t.num_steps, initial=step, disable=jax.process_index() != 0, dynamic_ncols=True)
        mark_step, mark_time = step, time.perf_counter()
        try:
            while step < t.num_steps:
                k = next_chunk(step, self.config)
                state, metrics = tr.run_steps(state, step, k)
                guard.add(step, metrics["finite"])
                step += k
                guard.check(keep_last=1)  # the previous call's flags: it has finished by now
                record = None
                if step % t.log_every == 0 or step == t.num_steps:
                    m = jax.device_get(metrics)  # the only host sync between logs
                    guard.check()
                    now = time.perf_counter()
                    rate = (step - mark_step) * self.tokens_per_step / (now - mark_time)
                    if mark_step != self.start_step or step - mark_step > k:
                        self.rates.append(rate)  # the first interval after start includes compilation
                    mark_step, mark_time = step, now
                    first = [k for k in ("train_loss", "lr", "grad_norm") if k in m]  # one model's, in their old order
                    keys = first + sorted(k for k in m if k not in first and k != "finite")
                    record = {k: float(m[k][-1]) for k in keys}
                    record.update(tokens_per_sec=rate, mfu=rate * self.flops_per_token / self.peak)
                    if guard.skipped:
                        record["nonfinite_skipped"] = guard.skipped
                stop_early = False
                if (t.eval_every and step % t.eval_every == 0) or step == t.num_steps:
                    guard.check()
                    record = record or {}
                    record.update(tr.evaluate(state.params, state.frozen))
                    guard.check_value("val_loss", record["val_loss"], step)
                    record["val_ppl"] = float(np.exp(record["val_loss"]))
                    stop_early = self.stopper.update(step, record, state)
                    on_eval = getattr(tr.task, "on_eval", None)  # optional: host work at evals (a GAN's grids)
                    if on_eval:
                        on_eval(tr, state, step)
                    mark_time = time.perf_counter()  # eval time is not training time
                if record:
                    self.writer.write(step, record)
                    self.last = {**(self.last or {}), **record}
                    bar.set_postfix({k_: f"{v:.4g}" for k_, v in record.items() if k_ in ("train_loss", "val_loss")})
                bar.update(k)
                self.save(step, state, force=step == t.num_steps or stop_early)
                if stop_early:
                    log.info(
                        "early stop at step %d: no better %s for %d evals",
                        step,
                        self.stopper.metric,
                        self.stopper.patience,
                    )
                    return state, step, "early_stopped"
                if stop_requested(step):
                    self.save(step, state, force=True)
                    return state, step, "preempted"
        finally:
            bar.close()
        return state, step, "completed"
