"""Magnitude pruning: exact sparsity and 2:4 pattern, masked optimizer steps, masks surviving resume,
and `python -m gpt_jax.compress prune` with a fine-tune."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gpt_jax.cli import compress
from gpt_jax.compression import prune
from gpt_jax.compression.matrices import flat
from gpt_jax.compression.prune_task import finetune_config
from gpt_jax.evaluation import evaluate_workdir
from gpt_jax.models import registry as models
from gpt_jax.trainer import train_and_evaluate
from gpt_jax.workdir import load_run, load_state, read_run


def random_params():
    rng = np.random.default_rng(0)
    return {
        "wte": rng.standard_normal((65, 32)).astype(np.float32),
        "h_0": {
            "mlp": {
                "fc": {"kernel": rng.standard_normal((32, 128)).astype(np.float32), "bias": np.ones(128, np.float32)}
            },
            "attn": {"out_kernel": rng.standard_normal((2, 16, 32)).astype(np.float32)},
        },
    }


def test_per_layer_and_global_sparsity_are_exact_and_biases_embeddings_untouched():
    params = random_params()
    for scope in ("layer", "global"):
        pruned = prune.apply_masks(params, prune.magnitude_masks(params, 0.5, scope=scope))
        rep = prune.report(pruned)
        assert rep["prunable_sparsity"] == 0.5
        if scope == "layer":
            assert all(r["sparsity"] == 0.5 for r in rep["matrices"].values())
        np.testing.assert_array_equal(pruned["wte"], params["wte"])
        np.testing.assert_array_equal(pruned["h_0"]["mlp"]["fc"]["bias"], params["h_0"]["mlp"]["fc"]["bias"])


def test_two_four_pattern_is_exact_and_keeps_the_largest():
    params = random_params()
    pruned = prune.apply_masks(params, prune.magnitude_masks(params, 0.5, pattern="2:4"))
    fc = np.asarray(pruned["h_0"]["mlp"]["fc"]["kernel"])
    assert prune.nm_exact(fc, 2, 4) and (fc.reshape(8, 4, 128) != 0).sum(1).min() == 2
    out = np.asarray(pruned["h_0"]["attn"]["out_kernel"]).reshape(32, 32)  # groups along its H*K inputs
    assert prune.nm_exact(out, 2, 4)
    w = params["h_0"]["mlp"]["fc"]["kernel"].reshape(8, 4, 128)
    kept = np.abs(fc.reshape(8, 4, 128))
    assert np.allclose(np.sort(kept, axis=1)[:, 2:], np.sort(np.abs(w), axis=1)[:, 2:])


def test_masked_adamw_keeps_pruned_weights_exactly_zero():
    params = jax.tree.map(jnp.asarray, random_params())
    masks = prune.magnitude_masks(params, 0.5)
    params = prune.apply_masks(params, masks)
    tx = prune.masked(optax.adamw(1e-2, weight_decay=0.5), masks)
    state = tx.init(params)
    start = params

    @jax.jit
    def step(params, state, i):
        grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(i), p.shape), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(5):
        params, state = step(params, state, i)
    for p, m, s in zip(jax.tree.leaves(params), jax.tree.leaves(masks), jax.tree.leaves(start)):
        assert (np.asarray(p)[~np.asarray(m)] == 0).all()
        assert (np.asarray(p)[np.asarray(m)] != np.asarray(s)[np.asarray(m)]).all()  # the kept ones train


def zeros_of(params):
    return {k: np.asarray(v) == 0 for k, v in flat(jax.device_get(params)).items() if k[-1].endswith("kernel")}


def test_masks_survive_resume(tiny_run, tmp_path):
    _, source, _ = tiny_run
    config = finetune_config(source, sparsity=0.5, pattern="", scope="layer", steps=8, lr=3e-3)
    config.checkpoint.every, config.checkpoint.keep, config.train.steps_per_call = 4, 3, 4
    run = tmp_path / "ft"
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("checkpoints", "*.jsonl", "tb", "*.json"))
    shutil.copy2(source / "tokenizer.json", run / "tokenizer.json")
    train_and_evaluate(config, run)
    _, cfg = read_run(run)
    family = models.family_of(config.model)
    first = load_state(run, cfg, family)
    shutil.rmtree(run / "checkpoints" / "8")  # resume from step 4
    train_and_evaluate(config, run)
    again = load_state(run, cfg, family)
    assert int(again["step"]) == 8
    pruned = zeros_of(first["params"])
    assert all(z.mean() >= 0.5 for z in pruned.values())
    for k, z in zeros_of(again["params"]).items():
        np.testing.assert_array_equal(z, pruned[k])  # the same weights are zero after the resume
    # the masks are in the restored optimizer state: one bool leaf per param, False exactly where zero
    masks = [np.asarray(v) for v in jax.tree.leaves(again["opt_state"]) if np.asarray(v).dtype == bool]
    assert sum(int((~m).sum()) for m in masks) == sum(int(z.sum()) for z in pruned.values())
    for a, b in zip(jax.tree.leaves(first["params"]), jax.tree.leaves(again["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_prune_command_with_finetune_writes_a_loadable_run_with_its_report(tiny_run, tmp_path):
    _, source, _ = tiny_run
    out = tmp_path / "p24"
    argv = ["prune", f"--workdir={source}", f"--out={out}", "--pattern=2:4", "--finetune_steps=10"]
    assert compress.main(argv) == 0
    report = json.loads((out / "pruning.json").read_text())
    assert report["report"]["prunable_sparsity"] == 0.5 and report["finetune"]["steps"] == 10
    params = load_run(out)[2]
    fc = np.asarray(params["h_0"]["mlp"]["fc"]["kernel"])
    assert prune.nm_exact(fc, 2, 4)
    assert np.isfinite(evaluate_workdir(str(out))["val_loss"])  # a params-only run evaluates
    assert not list(tmp_path.glob(".*"))  # no scratch or temporary directory left behind


@pytest.mark.parametrize("sparsity", [1.0, -0.5])
def test_check_sparsity_refuses_out_of_range(sparsity):
    with pytest.raises(ValueError, match="must be >= 0 and < 1"):
        prune.check_sparsity(sparsity, None)
