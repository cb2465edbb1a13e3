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

from gpt_jax import data as data_lib
from gpt_jax import flops, run_config
from gpt_jax import sharding as shd
from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, install_sigterm_handler, restore_target
from gpt_jax.config import ModelConfig, model_config_from
from gpt_jax.generate import generate
from gpt_jax.metrics import MetricWriter
from gpt_jax.optim import make_optimizer
from gpt_jax.train import TrainState, create_train_state, make_eval_step, make_train_step, scan_steps, state_shardings

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


def restore_or_init(ckpt: Checkpointer, model_cfg: ModelConfig, tx, seed: int, abstract, shardings):
    latest = ckpt.latest_step()
    if latest is None:
        return create_train_state(model_cfg, tx, seed, shardings), None
    return ckpt.restore(restore_target(abstract, shardings), latest)


class Trainer:
    """Set-up shared by training and its tests: data, model config, mesh, jitted steps, state."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, write: bool = True):
        self.config, self.workdir = config, pathlib.Path(workdir)
        shd.maybe_initialize_distributed()
        d = config.data
        tokenizer = data_lib.load_tokenizer(self.workdir) if (self.workdir / "tokenizer.json").exists() else None
        self.tokenizer, self.tokens = data_lib.prepare_tokens(
            d.dataset,
            d.tokenizer,
            manual_dir=d.manual_dir,
            data_dir=d.tfds_dir,
            tokenizer=tokenizer,
            # .get: config.json files written before these keys existed lack them
            vocab_size=d.get("vocab_size"),
            tokenizer_path=d.get("tokenizer_path"),
        )
        self.model_cfg = build_model_config(config, self.tokenizer.vocab_size)
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
        self.tx, self.schedule = make_optimizer(config.optim, t.num_steps)
        self.abstract, self.shardings = state_shardings(self.model_cfg, self.tx, self.mesh)
        self.batch_sharding = shd.batch_sharding(self.mesh, ndim=3, leading=1)  # [K, B, L]
        train_step = make_train_step(self.model_cfg, self.tx, self.schedule, grad_accum=t.grad_accum)
        with self.rules():
            self.train_fn = jax.jit(
                scan_steps(train_step),
                in_shardings=(self.shardings, self.batch_sharding),
                out_shardings=(self.shardings, shd.replicated(self.mesh)),
                donate_argnums=0,
            )
            self.eval_fn = jax.jit(
                make_eval_step(self.model_cfg),
                in_shardings=(self.shardings.params, self.batch_sharding),
                out_shardings=shd.replicated(self.mesh),
            )
        block = self.model_cfg.block_size
        self.batcher = data_lib.TokenBatcher(self.tokens["train"], t.batch_size, block, seed=config.seed)
        self.eval_data = self.to_device(
            data_lib.eval_batches(
                self.tokens["validation"],
                t.batch_size,
                block,
                t.eval_batches,
                config.seed,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
        )

    def rules(self):
        """Mesh + logical-axis rules in scope while tracing (for the activation constraints)."""
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(shd.DEFAULT_RULES))
        return stack

    def to_device(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v) for k, v in host_batch.items()}

    def batches(self, step: int, k: int) -> dict[str, jax.Array]:
        return self.to_device(
            self.batcher.batches(step, k, process_index=jax.process_index(), process_count=jax.process_count())
        )

    def run_steps(self, state: TrainState, step: int, k: int):
        with self.rules():
            return self.train_fn(state, self.batches(step, k))

    def evaluate(self, params) -> float:
        with self.rules():
            return float(self.eval_fn(params, self.eval_data))


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
    state, meta = restore_or_init(ckpt, cfg, tr.tx, config.seed, tr.abstract, tr.shardings)
    step = int(jax.device_get(state.step))
    if meta is not None:
        log.info("resumed from step %d in %s", step, tr.workdir)
    writer = MetricWriter(tr.workdir, resume_step=step if meta is not None else None)
    preempted = install_sigterm_handler()
    tokens_per_step = t.batch_size * cfg.block_size
    peak = (t.peak_flops or flops.device_peak_flops(cfg.dtype)) * jax.device_count()
    flops_per_token = flops.train_flops_per_token(cfg, cfg.block_size)
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
            if (t.eval_every and step % t.eval_every == 0) or step == t.num_steps:
                record = record or {}
                record["val_loss"] = tr.evaluate(state.params)
                record["val_ppl"] = float(np.exp(record["val_loss"]))
                mark_time = time.perf_counter()  # eval time is not training time
            if record:
                writer.write(step, record)
                last = {**(last or {}), **record}
                bar.set_postfix({k_: f"{v:.4g}" for k_, v in record.items() if k_ in ("train_loss", "val_loss")})
            bar.update(k)
            ckpt.maybe_save(step, state, {"step": step, "seed": config.seed}, force=step == t.num_steps)
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
        last = {**(last or {}), "val_loss": tr.evaluate(state.params)}
    steady = statistics.median(rates) if rates else None
    summary = {
        "status": status,
        "step": step,
        "train_loss": (last or {}).get("train_loss"),
        "val_loss": (last or {}).get("val_loss"),
        "tokens_per_sec": steady,
        "mfu": steady * flops_per_token / peak if steady else None,
        "peak_flops": peak,
        "wall_s": time.perf_counter() - t0,
        "devices": jax.device_count(),
        "backend": jax.default_backend(),
    }
    if jax.process_index() == 0:
        (tr.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    if status == "completed" and config.sample.num_tokens > 0:
        summary["sample"] = sample_text(tr, state.params, config.sample)
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
        slide=True,
        mesh=tr.mesh,
    )
    return s.prompt + tr.tokenizer.decode(ids[0])
