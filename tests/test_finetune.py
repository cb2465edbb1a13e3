"""Fine-tuning through the shared trainer: classification head on SST-2, SFT, PEFT state handling."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import run_config
from gpt_jax.model import GPT
from gpt_jax.optim import tree_bytes
from gpt_jax.trainer import Trainer, train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def byte_base(tmp_path_factory, tfds_cache):
    """A tiny byte-level base (any text encodes), pretrained 10 steps on tiny Shakespeare."""
    c = run_config.load_config(str(REPO / "configs" / "tiny.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.data.tokenizer = "byte"
    c.model.block_size = 64  # room for a few short SFT examples per row
    c.train.num_steps = 10
    c.train.eval_every = 10
    c.train.eval_batches = 1
    c.checkpoint.every = 10
    c.sample.num_tokens = 0
    workdir = tmp_path_factory.mktemp("byte_base")
    train_and_evaluate(c, workdir)
    return workdir


def finetune_config(tfds_cache, base, method, **train):
    c = run_config.load_config(str(REPO / "configs" / "finetune" / "sst2.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.init_from = str(base)
    c.peft.method = method
    c.peft.lora.rank = 4
    c.task.max_len = 32
    c.train.batch_size = 8
    c.train.num_steps = train.get("num_steps", 10)
    c.train.steps_per_call = 5
    c.train.log_every = 5
    c.train.eval_every = 5
    c.checkpoint.every = 10
    c.model.dropout = 0.0
    c.optim.warmup_steps = 2
    c.optim.lr = 1e-2
    return c


def leaves_equal_bitwise(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x).view(np.uint8), np.asarray(y).view(np.uint8))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("method", ["lora", "adapters", "frozen"])
def test_frozen_base_is_bit_identical_and_has_no_optimizer_state(byte_base, tfds_cache, tmp_path, method):
    tr = Trainer(finetune_config(tfds_cache, byte_base, method), tmp_path, write=False)
    assert (tr.task.seq_len, tr.task.lm_head) == (tr.task.max_len, False)  # what tokens/s and MFU count
    state = tr.init_state()
    frozen_before = jax.device_get(state.frozen)
    params_before = jax.device_get(state.params)
    for step in (0, 5):
        state, _ = tr.run_steps(state, step, 5)
    assert leaves_equal_bitwise(frozen_before, jax.device_get(state.frozen))
    assert not leaves_equal_bitwise(params_before, jax.device_get(state.params))  # the adapter did train
    # AdamW keeps two slots per trainable value and nothing for the frozen base.
    assert tree_bytes(state.opt_state) < 2 * tree_bytes(state.params) + 1024
    assert tree_bytes(state.frozen) > tree_bytes(state.params)


def test_lora_starts_exactly_at_the_base(byte_base, tfds_cache, tmp_path):
    from gpt_jax.workdir import load_run

    tr = Trainer(finetune_config(tfds_cache, byte_base, "lora"), tmp_path, write=False)
    state = jax.device_get(tr.init_state())
    _, base_cfg, base_params, _ = load_run(byte_base)
    ids = jnp.asarray(np.arange(16, dtype=np.int32)[None] % 200)
    got = GPT(tr.model_cfg).apply({"params": tr.task.backbone.gpt_params(state.params["backbone"], state.frozen)}, ids)
    want = GPT(base_cfg).apply({"params": base_params}, ids)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


FILLER = ["the", "a", "film", "plot", "cast", "story", "this", "it", "was", "is", "and", "so", "very", "with", "of"]
KEYWORDS = {1: "great", 0: "awful"}


def keyword_sentences(n: int, rng: np.random.Generator, positive_share: float) -> list[tuple[int, str]]:
    """(label, text): 2-4 filler words, then the label's keyword (at most 28 bytes)."""
    rows = []
    for _ in range(n):
        label = int(rng.random() < positive_share)
        rows.append((label, " ".join([*rng.choice(FILLER, rng.integers(2, 5)), KEYWORDS[label]])))
    return rows


def write_keyword_sst2(manual_dir: pathlib.Path, sizes: dict[str, int], positive_share=0.35) -> dict:
    """A learnable stand-in for SST-2 in its TSV layout (header; label<TAB>text) under manual_dir/sst2:
    the label is decided by a keyword. Returns {split: labels}."""
    rng = np.random.default_rng(0)
    (manual_dir / "sst2").mkdir(parents=True)
    labels = {}
    for split, file in (("train", "train.tsv"), ("validation", "dev.tsv"), ("test", "test.tsv")):
        rows = keyword_sentences(sizes[split], rng, positive_share)
        assert max(len(text) for _, text in rows) <= 28  # all within task.max_len: no keyword is cut off
        header = "label\tsentence\n" if split == "train" else "label\tcontent\n"
        (manual_dir / "sst2" / file).write_text(header + "".join(f"{y}\t{t}\n" for y, t in rows))
        labels[split] = np.array([y for y, _ in rows])
    return labels


def test_classify_end_to_end_report_best_checkpoint_and_adapter(byte_base, tmp_path):
    """LoRA + head learn a keyword-labelled set (the SST-2 reader over our TSVs; the label's keyword ends
    the sentence, where "last" pooling reads): dev and test accuracy far above the majority class
    (measured: best step 25, dev 1.0 vs a majority of 0.61, test 0.995 vs 0.695; pooling a pad position
    or misaligned labels stay at the majority); the report, best checkpoint and adapter file are the
    trained model's."""
    from gpt_jax.peft.apply import apply_adapter

    sizes = {"train": 512, "validation": 200, "test": 200}
    labels = write_keyword_sst2(tmp_path / "data", sizes)
    majority = {split: max(y.mean(), 1 - y.mean()) for split, y in labels.items()}
    # A TFDS dir of its own: the session's cache holds the real SST-2 under the same builder name.
    c = finetune_config(tmp_path / "tfds", byte_base, "lora", num_steps=30)
    c.data.manual_dir = str(tmp_path / "data")
    c.train.batch_size = 16
    c.task.patience = 2  # stop after two evals without a better val_accuracy
    summary = train_and_evaluate(c, tmp_path / "ft")
    ft = tmp_path / "ft"
    assert summary["status"] in ("completed", "early_stopped")
    for split in ("validation", "test"):
        assert summary[f"{split}_accuracy"] >= majority[split] + 0.25, (split, summary[f"{split}_accuracy"], majority)
    assert summary["best_metric"] == "val_accuracy" and (ft / "best").is_dir()
    assert summary["report_from_step"] == summary["best_step"]
    assert summary["best_value"] == pytest.approx(summary["validation_accuracy"])  # the report is the best state's
    report = json.loads((ft / "report.json").read_text())
    assert {split: r["n"] for split, r in report["reports"].items()} == {"validation": 200, "test": 200}  # = sizes
    assert report["reports"]["test"]["accuracy"] == summary["test_accuracy"]
    assert json.loads((ft / "label_map.json").read_text()) == {"0": "negative", "1": "positive"}
    assert "confusion matrix" in (ft / "report.txt").read_text()
    assert 0 < summary["trainable_pct"] < 100

    # The adapter file alone, put on a copy of the base in another workdir, gives the fine-tuned model.
    other_base = tmp_path / "base_copy"
    shutil.copytree(byte_base, other_base)
    cfg, gpt_params, _, head = apply_adapter(ft / "adapter.safetensors", other_base)
    tr = Trainer(c, ft, write=False)
    from gpt_jax.checkpoint import Checkpointer, restore_target

    with Checkpointer(ft / "best", save_every=0, read_only=True) as ckpt:
        best, _ = ckpt.restore(restore_target(tr.abstract, tr.shardings))
    best = jax.device_get(best)
    ids = jnp.asarray(np.arange(24, dtype=np.int32)[None] % 200)
    want = GPT(cfg).apply({"params": tr.task.backbone.gpt_params(best.params["backbone"], best.frozen)}, ids)
    got = GPT(cfg).apply({"params": gpt_params}, ids)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    np.testing.assert_array_equal(head["kernel"], best.params["head"]["kernel"])

    # Sampling/chat/evaluation load a fine-tuned workdir as plain GPT params (LoRA merged in).
    from gpt_jax.workdir import load_run

    _, loaded_cfg, loaded, tokenizer = load_run(ft)
    assert loaded_cfg == cfg and tokenizer.vocab_size == tr.tokenizer.vocab_size
    assert GPT(loaded_cfg).apply({"params": loaded}, ids).shape == want.shape


def flat(tree) -> dict[str, np.ndarray]:
    """{'h_0/attn/query/kernel': array, ...} of a params tree (on the host, partitioning boxes removed)."""
    import flax.linen as nn
    from flax import traverse_util

    flat_tree = traverse_util.flatten_dict(nn.meta.unbox(jax.device_get(tree)), sep="/")
    return {k: np.asarray(v) for k, v in flat_tree.items()}


@pytest.mark.parametrize("method", ["adalora", "prefix"])
def test_adalora_and_prefix_train_through_the_trainer(byte_base, tmp_path, method):
    """The two PEFT methods the frozen-base test above leaves out, run end to end by train_and_evaluate
    on the keyword set: the loss falls (measured, val loss at steps 20 -> 60: AdaLoRA 0.40 -> 0.013,
    prefix 0.36 -> 0.083; a fresh head gives ln 2) and accuracy beats the majority class (1.0 vs 0.68);
    the frozen base in the final checkpoint is bit-identical to the base run's params and has no
    optimizer state; the trainable count is exactly the method's leaves (+ the head); the adapter file
    alone gives the trained model. AdaLoRA: the summary's rank allocation holds every matrix, meets the
    final budget (target_rank per matrix on average) and is uneven (measured: value/out 4, query/key 0).
    Prefix (reparameterised, hidden 16): folding the MLP into direct slots gives the same logits, and
    the trained slots change the model."""
    from gpt_jax.checkpoint import Checkpointer, checkpoint_dir, restore_target
    from gpt_jax.peft.apply import apply_adapter
    from gpt_jax.workdir import load_run

    labels = write_keyword_sst2(tmp_path / "data", {"train": 256, "validation": 100, "test": 100})
    majority = max(labels["validation"].mean(), 1 - labels["validation"].mean())
    c = finetune_config(tmp_path / "tfds", byte_base, method, num_steps=60)
    c.data.manual_dir = str(tmp_path / "data")
    c.train.batch_size = 16
    c.train.steps_per_call = c.train.log_every = c.train.eval_every = 20
    c.task.early_stop_metric = None  # report the last state: AdaLoRA's final budget applies from step 42
    c.optim.lr, c.optim.weight_decay = 2e-2, 0.0
    if method == "adalora":
        a = c.peft.adalora
        a.rank, a.target_rank, a.mask_interval = 4, 2, 2  # budget: 4 -> 2 per matrix over steps 6..42
    else:
        c.peft.prefix.length, c.peft.prefix.hidden = 4, 16
    ft = tmp_path / "ft"
    summary = train_and_evaluate(c, ft)
    assert summary["status"] == "completed" and summary["method"] == method

    logged = [json.loads(line) for line in (ft / "metrics.jsonl").read_text().splitlines()]
    val_losses = [r["val_loss"] for r in logged if "val_loss" in r]
    assert val_losses[-1] < 0.5 * np.log(2) and val_losses[-1] < val_losses[0], val_losses  # a fresh head: ln 2
    assert summary["validation_accuracy"] >= majority + 0.25, (summary["validation_accuracy"], majority)

    tr = Trainer(c, ft, write=False)
    with Checkpointer(checkpoint_dir(ft), save_every=0, read_only=True) as ckpt:
        state, _ = ckpt.restore(restore_target(tr.abstract, tr.shardings))
    state = jax.device_get(state)
    _, base_cfg, base_params, _ = load_run(byte_base)
    frozen, base = flat(state.frozen), flat(base_params)
    assert frozen.keys() == base.keys()  # the whole base is frozen, nothing of the method's is
    assert all(np.array_equal(frozen[k].view(np.uint8), base[k].view(np.uint8)) for k in base)
    trainable = flat(state.params)
    assert summary["trainable_params"] == sum(v.size for v in trainable.values())
    assert summary["total_params"] == summary["trainable_params"] + sum(v.size for v in base.values())
    assert summary["opt_state_bytes"] < tree_bytes(state.frozen)  # no optimizer slot for the frozen base
    d, n_layer, r = base_cfg.n_embd, base_cfg.n_layer, 4
    head = d * 2 + 2
    if method == "adalora":
        # q, k, v, out of each layer (D -> D here): P [D, r], Λ [r], Q [r, D].
        assert summary["trainable_params"] == n_layer * 4 * (d * r + r + r * d) + head
        alloc = summary["rank_allocation"]
        assert len(alloc) == n_layer * 4 and all(0 <= v <= r for v in alloc.values()), alloc
        assert sum(alloc.values()) == 2 * len(alloc), alloc  # the final budget: target_rank per matrix on average
        assert max(alloc.values()) > 2, alloc  # reallocated by importance, not pruned evenly (measured: v/out 4, q/k 0)
        lam = {k: v for k, v in trainable.items() if k.endswith("/lam")}
        assert sum(int(np.count_nonzero(v)) for v in lam.values()) == sum(alloc.values())
    else:
        assert all("/prefix/" in k for k in trainable if not k.startswith("head/"))
        assert 0 < summary["trainable_pct"] < 100

    ids = jnp.asarray(np.arange(24, dtype=np.int32)[None] % 200)
    run_cfg = tr.task.backbone.model_cfg  # the base plus the method's modules (prefix slots)
    params = tr.task.backbone.gpt_params(state.params["backbone"], state.frozen)
    logits = np.asarray(GPT(run_cfg).apply({"params": params}, ids))
    cfg, from_file, _, file_head = apply_adapter(ft / "adapter.safetensors", byte_base)
    np.testing.assert_allclose(np.asarray(GPT(cfg).apply({"params": from_file}, ids)), logits, atol=1e-5)
    np.testing.assert_array_equal(file_head["kernel"], state.params["head"]["kernel"])
    if method == "prefix":
        from gpt_jax.peft.prefix import fold

        folded_cfg, folded = fold(run_cfg, params)
        keys = flat(folded).keys()
        assert not any("prefix_embed" in k for k in keys) and any(k.endswith("prefix/prefix_key") for k in keys)
        np.testing.assert_allclose(np.asarray(GPT(folded_cfg).apply({"params": folded}, ids)), logits, atol=1e-5)
        base_logits = np.asarray(GPT(base_cfg).apply({"params": base_params}, ids))
        assert np.abs(base_logits - logits).max() > 1e-3  # the slots do take attention


def test_finetune_resumes_from_its_own_checkpoint(byte_base, tfds_cache, tmp_path):
    c = finetune_config(tfds_cache, byte_base, "full", num_steps=10)
    c.task.early_stop_metric = None
    first = train_and_evaluate(c, tmp_path)
    c.train.num_steps = 15  # continue the same workdir: restores step 10, ignores init_from's weights
    c.train.allow_changes = True  # a longer lr schedule changes the trajectory: an explicit choice
    second = train_and_evaluate(c, tmp_path)
    assert first["step"] == 10 and second["step"] == 15
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 15


def test_sft_packed_training_runs_and_masks_prompts(byte_base, tfds_cache, tmp_path):
    rows = [{"instruction": f"{i}+{i}", "input": "", "output": str(2 * i)} for i in range(40)]
    data = tmp_path / "tiny_sft.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = run_config.load_config(str(REPO / "configs" / "finetune" / "alpaca_sft.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.task.dataset = str(data)
    c.task.template = "plain"  # short: several examples fit the tiny base's 64-token rows
    c.init_from = str(byte_base)
    c.model.dropout = 0.0
    c.train.batch_size = 8
    c.train.num_steps = 8
    c.train.steps_per_call = 4
    c.train.log_every = 4
    c.train.eval_every = 8
    c.checkpoint.every = 8
    c.optim.lr = 1e-2
    c.optim.warmup_steps = 2
    # The 10-step base's tied token table is still at its init scale (every logit within ~0.6 of the
    # others), so adapters on the kernels alone barely move the output (5.42 -> 5.25 in 8 steps); LoRA
    # on `wte` too adapts the tied output head as well.
    c.peft.lora.targets = "wte|" + c.peft.lora.targets
    tr = Trainer(c, tmp_path / "run", write=False)
    batch = tr.task.train_batches(0, 1, 0, 1)
    assert set(batch) >= {"inputs", "targets", "weights", "segment_ids", "positions"}
    assert batch["segment_ids"].max() > 1  # several examples share a row
    w = batch["weights"][0]
    assert 0 < w.sum() < (batch["segment_ids"][0] > 0).sum()  # prompts are not trained on
    state = tr.init_state()
    before = tr.evaluate(state.params, state.frozen)["val_loss"]  # the base + a fresh (zero) LoRA
    summary = train_and_evaluate(c, tmp_path / "run")
    assert summary["method"] == "lora"
    # The replies' loss falls (measured: 5.42 at init -> 2.13 after 8 steps; first logged train loss 2.69).
    assert summary["val_loss"] < before - 1.5, (before, summary["val_loss"])
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["train_loss"] for r in logged if "train_loss" in r]
    assert len(train_losses) == 2 and train_losses[-1] < train_losses[0] < before, (before, train_losses)


def test_bad_finetune_inputs_are_one_line_errors(byte_base, tfds_cache, tmp_path):
    c = finetune_config(tfds_cache, byte_base, "lora")
    c.init_from = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither a gpt_jax workdir"):
        Trainer(c, tmp_path / "w", write=False)
    c = finetune_config(tfds_cache, byte_base, "lora")
    c.task.pooling = "max"
    with pytest.raises(ValueError, match="task.pooling"):
        Trainer(c, tmp_path / "w", write=False)
    c = finetune_config(tfds_cache, byte_base, "nope")
    with pytest.raises(ValueError, match="peft.method"):
        Trainer(c, tmp_path / "w", write=False)


@pytest.mark.parametrize("how", ["last", "mean"])
def test_pooling_reads_only_real_tokens(how):
    from gpt_jax.tasks.classify import pool

    x_BxLxD = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 4))
    lengths_B = jnp.array([6, 3, 1])
    pooled_BxD = pool(x_BxLxD, lengths_B, how)
    for b, n in enumerate(np.asarray(lengths_B)):
        real_LxD = np.asarray(x_BxLxD[b, :n])
        want_D = real_LxD[-1] if how == "last" else real_LxD.mean(0)
        np.testing.assert_allclose(pooled_BxD[b], want_D, rtol=1e-6, atol=1e-6)
    # Whatever sits in the pad positions never reaches the pooled vector.
    pad_BxL = jnp.arange(6)[None] >= lengths_B[:, None]
    noisy_BxLxD = jnp.where(pad_BxL[..., None], 1e3, x_BxLxD)
    np.testing.assert_array_equal(pool(noisy_BxLxD, lengths_B, how), pooled_BxD)
