"""Configs saved before PEFT options were nested per method (gpt_jax.peft.legacy): the migration itself,
and fine-tuned workdirs whose JSON is the old layout (flat config.peft, PEFT sizes in model_config.json)
loading, evaluating and resuming as they did."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import peft, run_config
from gpt_jax.evaluation import evaluate_workdir
from gpt_jax.model import GPT
from gpt_jax.peft.legacy import migrate_config, migrate_peft
from gpt_jax.trainer import train_and_evaluate
from gpt_jax.workdir import load_run, read_run_file

REPO = pathlib.Path(__file__).resolve().parents[1]

# config.peft as the code before the per-method sections wrote it (its base_config defaults)
OLD_PEFT = {
    "method": "full", "targets": "attn/(query|key|value|out_kernel)", "rank": 8, "alpha": 16.0, "dropout": 0.0,
    "lora_plus_ratio": 1.0, "target_rank": 4, "init_warmup": 0.1, "final_warmup": 0.3, "mask_interval": 10,
    "beta1": 0.85, "beta2": 0.85, "orth_reg": 0.1, "adapter_dim": 16, "prefix_len": 8, "prefix_hidden": 0,
}  # fmt: skip


@pytest.mark.parametrize(
    "method,changes,section",
    [
        ("lora", {"rank": 4, "lora_plus_ratio": 2.0},
         {"targets": OLD_PEFT["targets"], "rank": 4, "alpha": 16.0, "dropout": 0.0, "plus_ratio": 2.0}),
        ("adalora", {"rank": 6, "target_rank": 2},
         {"targets": OLD_PEFT["targets"], "rank": 6, "alpha": 16.0, "dropout": 0.0, "target_rank": 2,
          "init_warmup": 0.1, "final_warmup": 0.3, "mask_interval": 10, "beta1": 0.85, "beta2": 0.85, "orth_reg": 0.1}),
        ("adapters", {"adapter_dim": 4}, {"dim": 4}),
        ("prefix", {"prefix_len": 3, "prefix_hidden": 8}, {"length": 3, "hidden": 8}),
        ("full", {}, None),
    ],
)  # fmt: skip
def test_flat_peft_section_goes_to_the_method_that_read_it(method, changes, section):
    old = {**OLD_PEFT, "method": method, **changes}
    new = migrate_peft(old)
    assert new == ({"method": method} if section is None else {"method": method, method: section})
    assert migrate_peft(new) == new  # current sections pass unchanged
    peft.make_method(new, 100)  # and build the method


def test_migrate_config_handles_both_files_and_leaves_current_ones_alone():
    model = {"n_layer": 2, "n_embd": 32, "adapter_dim": 0, "prefix_len": 3, "prefix_hidden": 8}
    assert migrate_config(model) == {"n_layer": 2, "n_embd": 32}
    config = {"seed": 1, "model": {"n_layer": 2}, "peft": {**OLD_PEFT, "method": "adapters"}}
    assert migrate_config(config) == {
        "seed": 1,
        "model": {"n_layer": 2},
        "peft": {"method": "adapters", "adapters": {"dim": 16}},
    }
    current = {"seed": 1, "peft": {"method": "lora", "lora": {"rank": 2}, "prefix": {"length": 8, "hidden": 0}}}
    assert migrate_config(current) == current and migrate_config({"step": 3}) == {"step": 3}


def _finetune_config(tfds_cache, method: str):
    """SST-2 on a 2-layer byte-level GPT from scratch, 2 steps: a fine-tuned workdir in seconds."""
    c = run_config.load_config(str(REPO / "configs" / "finetune" / "sst2.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.data.tokenizer = "byte"
    c.data.vocab_size = None
    c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size = 2, 2, 32, 32
    c.task.max_len = 32
    c.task.early_stop_metric = None
    c.peft.method = method
    c.peft.lora.rank = 4
    c.peft.lora.plus_ratio = 2.0
    c.peft.prefix.length = 3
    c.peft.prefix.hidden = 8
    c.train.batch_size = 8
    c.train.num_steps = 2
    c.train.steps_per_call = 2
    c.train.log_every = 2
    c.train.eval_every = 2
    c.checkpoint.every = 2
    c.optim.warmup_steps = 1
    return c


def _make_legacy(workdir: pathlib.Path, method: str) -> None:
    """Rewrite the run's JSON as the code before per-method PEFT sections wrote it; the checkpoint stays."""
    config = json.loads((workdir / "config.json").read_text())
    config["peft"] = {
        **OLD_PEFT,
        "method": method,
        "rank": 4,
        "lora_plus_ratio": 2.0,
        "prefix_len": 3,
        "prefix_hidden": 8,
    }
    (workdir / "config.json").write_text(json.dumps(config))
    model = json.loads((workdir / "model_config.json").read_text())
    sizes = (
        {"adapter_dim": 0, "prefix_len": 3, "prefix_hidden": 8}
        if method == "prefix"
        else {"adapter_dim": 0, "prefix_len": 0, "prefix_hidden": 0}
    )
    (workdir / "model_config.json").write_text(json.dumps({**model, **sizes}))


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_legacy_finetuned_workdir_loads_evaluates_and_resumes(tfds_cache, tmp_path, method):
    c = _finetune_config(tfds_cache, method)
    workdir = tmp_path / "run"
    summary = train_and_evaluate(c, workdir)
    assert "adapter_dim" not in read_run_file(workdir, "model_config.json")  # the architecture only
    _, cfg, params, _ = load_run(workdir)
    _make_legacy(workdir, method)
    assert "rank" in json.loads((workdir / "config.json").read_text())["peft"]  # flat, as old code wrote it
    assert read_run_file(workdir, "config.json")["peft"] == {"method": method, method: c.peft[method].to_dict()}

    old_config, old_cfg, old_params, _ = load_run(workdir)
    assert old_cfg == cfg and old_config.peft.method == method
    assert jax.tree.structure(old_params) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old_params), jax.tree.leaves(params)))
    ids = jnp.asarray(np.arange(16, dtype=np.int32)[None])
    np.testing.assert_array_equal(
        GPT(old_cfg).apply({"params": old_params}, ids), GPT(cfg).apply({"params": params}, ids)
    )

    metrics = evaluate_workdir(str(workdir))
    assert metrics["step"] == 2
    np.testing.assert_allclose(
        [metrics["val_loss"], metrics["val_accuracy"]], [summary["val_loss"], summary["val_accuracy"]], rtol=1e-6
    )

    # The same run config resumes the legacy workdir (nothing it saved counts as a change) and rewrites
    # its JSON in the current layout.
    again = train_and_evaluate(c, workdir)
    assert again["step"] == 2 and again["method"] == method
    assert read_run_file(workdir, "config.json")["peft"][method]
    assert "prefix_len" not in json.loads((workdir / "model_config.json").read_text())
