"""The vqa / image_classify tasks and their data (issue 17): templates, step-addressed batches, the fixed
held-out set, augmentation, freeze switches, and a bitwise checkpoint/resume of a multimodal run."""

import pathlib

import jax
import numpy as np
import pytest

from gpt_jax import run_config
from gpt_jax.data import vqa
from gpt_jax.data.tokenizers import load_tokenizer
from gpt_jax.models import registry
from gpt_jax.tasks.vqa import VQATask
from gpt_jax.trainer import train_and_evaluate
from gpt_jax.workdir import load_run, load_state, read_run

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "kind,digits,operand,want",
    [
        ("digit", (7, -1), 0, "seven"),
        ("caption", (7, -1), 0, "the digit seven"),
        ("parity", (7, -1), 0, "odd"),
        ("parity", (0, -1), 0, "even"),
        ("arithmetic", (7, -1), 3, "ten"),
        ("arithmetic", (9, -1), 9, "eighteen"),
        ("compare", (3, 8), 0, "the second"),
        ("compare", (8, 3), 0, "the first"),
        ("compare", (5, 5), 0, "they are equal"),
    ],
)
def test_templates_give_the_right_answer(kind, digits, operand, want):
    assert vqa.answer(kind, digits, operand) == want


def test_rows_hold_the_answer_after_the_prompt_and_weights_only_there():
    tok = vqa.build_tokenizer()
    rows = vqa.VQARows(tok, num_image_tokens=4, max_images=2)
    assert len(set(vqa.question("digit", i) for i in range(4))) == 4  # several phrasings
    images = np.zeros((2, 2, 8, 8), np.float32)
    got = rows.build(["arithmetic", "compare"], [0, 1], [3, 0], np.array([[7, -1], [2, 6]]), images)
    for r, (question, answer) in enumerate(
        [("what is this digit plus three?", "ten"), ("which digit is bigger", "the second")]
    ):
        p = got["prefix_len"][r]
        prompt = tok.decode(got["inputs"][r, :p][got["inputs"][r, :p] != tok.image_id])
        assert prompt.startswith(question)
        assert (got["inputs"][r, :p] == tok.image_id).sum() == 4 * (1 + (r == 1))
        answer_ids = got["targets"][r][got["weights"][r] > 0]
        assert tok.decode(answer_ids) == f"{answer} <eos>"
        assert got["weights"][r, : p - 1].sum() == 0  # no loss on the image or question tokens


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    make = lambda n: {
        "images": rng.random((n, 8, 8)).astype(np.float32),
        "labels": rng.integers(0, 10, n).astype(np.int32),
    }
    return {"train": make(50), "validation": make(20)}


def test_batches_are_a_pure_function_of_the_step(splits):
    rows = vqa.VQARows(vqa.build_tokenizer(), 4, 2)
    mix, aug = vqa.kind_mix({k: 1 for k in vqa.KINDS}), {"shift": 1.0, "rotate": 10.0}
    whole = vqa.step_batches(rows, splits["train"], 8, 0, 3, 4, mix, aug)
    parts = [vqa.step_batches(rows, splits["train"], 8, 0, s, 2, mix, aug) for s in (3, 5)]
    for key, value in whole.items():
        np.testing.assert_array_equal(value, np.concatenate([p[key] for p in parts]))
    second = vqa.step_batches(rows, splits["train"], 8, 0, 3, 4, mix, aug, process_index=1, process_count=2)
    np.testing.assert_array_equal(second["inputs"], whole["inputs"][:, 4:])
    assert not np.array_equal(whole["inputs"][0], whole["inputs"][1])


def test_eval_set_is_fixed_and_held_out_only(splits):
    rows = vqa.VQARows(vqa.build_tokenizer(), 4, 2)
    a, b = vqa.eval_rows(rows, splits["validation"]), vqa.eval_rows(rows, splits["validation"])
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    n = len(splits["validation"]["labels"])
    assert np.bincount(a["kind"]).tolist() == [n] * len(vqa.KINDS)  # every kind once per held-out image
    compare = a["images"][a["kind"] == vqa.KINDS.index("compare")][..., 0]
    held_out = {img.tobytes() for img in splits["validation"]["images"]}
    assert all(img.tobytes() in held_out for img in compare.reshape(-1, 8, 8))
    chance = vqa.chance(a)
    assert 0.4 <= chance["parity"] <= 0.8 and chance["digit"] < 0.5


def test_augmentation_is_identity_at_zero_and_shifts_by_whole_pixels():
    img = np.zeros((1, 8, 8), np.float32)
    img[0, 3, 4] = 1.0
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(vqa.augment(img, rng, 0.0, 0.0), img, atol=1e-6)
    out = vqa.augment(np.repeat(img, 50, 0), rng, 2.0, 15.0)
    assert out.shape == (50, 8, 8) and out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
    assert not np.allclose(out, img)
    assert np.allclose(out.sum((1, 2)), 1.0, atol=0.05)  # one pixel's mass moves, it is not created


def smoke_config(tfds_cache, steps, **vqa_keys):
    c = run_config.load_config(str(REPO / "configs" / "multimodal" / "sklearn_digits_smoke.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.train.batch_size, c.train.num_steps, c.train.steps_per_call, c.train.log_every = 16, steps, 5, 5
    c.optim.decay_steps = 10  # the same schedule however far a run goes
    c.checkpoint.every = 5
    for k, v in vqa_keys.items():
        c.vqa[k] = v
    return c


@pytest.mark.parametrize(
    "freeze,trainable,frozen",
    [
        ("none", {"vit", "projector", "lm", "aux_head"}, {"lm_base"}),
        ("encoder", {"projector", "lm"}, {"lm_base", "vit"}),
        ("all_but_projector", {"projector"}, {"lm_base", "vit", "lm"}),
    ],
)
def test_freeze_moves_sub_models_to_the_frozen_state(tfds_cache, tmp_path, freeze, trainable, frozen):
    task = VQATask(smoke_config(tfds_cache, 10, freeze=freeze), tmp_path)
    params, fixed = jax.eval_shape(task.init, jax.random.key(0))
    assert set(params) == trainable and set(fixed) == frozen


def test_bad_freeze_is_refused(tfds_cache, tmp_path):
    with pytest.raises(ValueError, match="vqa.freeze='head' is not one of"):
        VQATask(smoke_config(tfds_cache, 10, freeze="head"), tmp_path)


def test_multimodal_run_resumes_bitwise_and_loads(tfds_cache, tmp_path):
    straight = train_and_evaluate(smoke_config(tfds_cache, 10), tmp_path / "a")
    train_and_evaluate(smoke_config(tfds_cache, 5), tmp_path / "b")
    resumed = train_and_evaluate(smoke_config(tfds_cache, 10), tmp_path / "b")
    assert resumed["val_loss"] == straight["val_loss"] and resumed["step"] == 10
    assert {k for k in straight if k.startswith("val_acc_")} == {f"val_acc_{k}" for k in vqa.KINDS}
    _, cfg = read_run(tmp_path / "a")
    family = registry.get("vlm")
    a = load_state(tmp_path / "a", cfg, family)
    b = load_state(tmp_path / "b", cfg, family)
    jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])
    jax.tree.map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])
    _, loaded_cfg, params, tok = load_run(tmp_path / "a")  # what sample/chat load: the whole VLM tree
    assert set(params) == {"vit", "projector", "lm"} and loaded_cfg == cfg
    assert load_tokenizer(tmp_path / "a").words == tok.words == vqa.build_tokenizer().words


def test_lora_on_the_lm_trains_adapters_beside_the_encoder(tfds_cache, tmp_path):
    c = smoke_config(tfds_cache, 10, freeze="lm")
    c.peft.method = "lora"
    task = VQATask(c, tmp_path)
    params, fixed = jax.eval_shape(task.init, jax.random.key(0))
    lm_leaves = jax.tree_util.tree_leaves_with_path(fixed["lm"])
    assert set(params) == {"vit", "projector", "aux_head"} and lm_leaves  # vqa.freeze=lm: the LoRA factors stay put too
    c.vqa.freeze = "none"
    task = VQATask(c, tmp_path)
    params, fixed = jax.eval_shape(task.init, jax.random.key(0))
    n_lora = sum(x.size for x in jax.tree.leaves(params["lm"]))
    n_base = sum(x.size for x in jax.tree.leaves(fixed["lm_base"]))
    assert 0 < n_lora < n_base / 4  # low-rank factors train, the LM's own weights are frozen
    real = jax.eval_shape(lambda: task.params(*task.init(jax.random.key(0))))
    assert jax.tree.structure(real["lm"]) == jax.tree.structure(fixed["lm_base"])


def test_init_from_grafts_a_text_gpt_into_the_lm(tiny_config, tfds_cache, tmp_path):
    base = tiny_config()  # 2 layers, 32 wide, block 32: the LM takes this architecture
    base.train.num_steps, base.checkpoint.every = 2, 2
    train_and_evaluate(base, tmp_path / "base")
    c = smoke_config(tfds_cache, 10)
    c.init_from = str(tmp_path / "base")
    task = VQATask(c, tmp_path / "vqa")
    assert task.model_cfg.lm.n_layer == 2 and task.model_cfg.lm.vocab_size == task.tokenizer.vocab_size
    (text,) = task.pretrained()
    params, _ = task.init(jax.random.key(0), text)
    _, _, text_params, _ = load_run(tmp_path / "base")
    np.testing.assert_array_equal(params["lm"]["h_1"]["mlp"]["fc"]["kernel"], text_params["h_1"]["mlp"]["fc"]["kernel"])
    np.testing.assert_array_equal(params["lm"]["wpe"], text_params["wpe"])
    assert params["lm"]["wte"].shape[0] == task.tokenizer.vocab_size  # its own vocabulary, not grafted


def test_exact_match_per_kind_counts_that_kinds_rows_only(tfds_cache, tmp_path):
    from gpt_jax.train import make_eval

    task = VQATask(smoke_config(tfds_cache, 10), tmp_path)
    params, frozen = task.init(jax.random.key(0))
    batches = task.eval_batches(0, 1)
    one = jax.jit(lambda b: task.logits(params, frozen, b).argmax(-1))
    preds = np.stack([np.asarray(one({k: v[i] for k, v in batches.items()})) for i in range(len(batches["kind"]))])
    right = np.random.default_rng(0).random(batches["kind"].shape) < 0.6  # these rows get their own argmax as target
    batches["targets"] = np.where(right[..., None], preds, batches["targets"])
    got = jax.jit(make_eval(task.metrics()))(params, frozen, batches)
    exact = (right | ((preds == batches["targets"]) | (batches["weights"] == 0)).all(-1)).reshape(-1)
    kinds = batches["kind"].reshape(-1)
    for i, kind in enumerate(vqa.KINDS):
        np.testing.assert_allclose(float(got[f"val_acc_{kind}"]), exact[kinds == i].mean(), rtol=1e-6)
    assert 0.5 < float(got["val_accuracy"]) < 0.7


def test_vit_classifier_baseline_trains_through_the_trainer(tfds_cache, tmp_path):
    c = run_config.load_config(str(REPO / "configs" / "multimodal" / "vit_classifier.py"))
    smoke = smoke_config(tfds_cache, 10)
    c.vqa, c.data.tfds_dir = smoke.vqa, str(tfds_cache)
    c.model.vit = smoke.model.vit
    c.model.vit.num_classes = 10
    c.train.batch_size, c.train.num_steps, c.train.steps_per_call, c.train.log_every = 16, 10, 5, 5
    out = train_and_evaluate(c, tmp_path)
    assert out["held_out_images"] == 360 and 0.0 <= out["held_out_accuracy"] <= 1.0 and out["step"] == 10
    assert not (tmp_path / "tokenizer.json").exists()  # no text: nothing saved for a tokenizer
