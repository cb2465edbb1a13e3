"""Multimodal inference CLIs on a tiny trained vqa run: sample --image against the batch evaluation, chat
/image, the attention heatmap over the image, bad input as one-line errors, nothing written to the workdir."""

from __future__ import annotations

import io
import json
import pathlib
import struct
import zlib

import jax
import numpy as np
import pytest

from gpt_jax import vlm_run
from gpt_jax.analysis import image_attention
from gpt_jax.cli import attention_maps as attention_cli
from gpt_jax.cli import chat as chat_cli
from gpt_jax.cli import sample as sample_cli
from gpt_jax.cli import train as train_cli
from gpt_jax.data import image_io, vqa
from gpt_jax.models import registry as models
from gpt_jax.tasks.vqa import VQATask
from gpt_jax.workdir import load_state, read_run

TINY = [
    "--config=configs/multimodal/digits_vqa.py",
    "--config.vqa.dataset=sklearn_digits",
    "--config.model.vit.image_size=8",
    "--config.model.vit.patch_size=4",
    "--config.model.vit.conv_stem=False",
    "--config.model.vit.n_layer=1",
    "--config.model.vit.n_embd=32",
    "--config.model.vit.n_head=2",
    "--config.model.merge=1",  # a 2x2 token grid per image for the heatmap
    "--config.model.n_layer=1",
    "--config.model.n_embd=32",
    "--config.model.n_head=2",
    "--config.train.num_steps=10",
    "--config.train.batch_size=64",  # also the evaluation's batch: 1,800 held-out rows in 29 batches
    "--config.train.log_every=10",
    "--config.vqa.augment_shift=0",
    "--config.vqa.augment_rotate=0",
]
QUESTION = "What digit is this?"


def _snapshot(workdir: pathlib.Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(workdir.rglob("*"))}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tfds_cache):
    workdir = tmp_path_factory.mktemp("vqa") / "run"
    assert train_cli.train([*TINY, f"--config.data.tfds_dir={tfds_cache}", f"--workdir={workdir}"]) == 0
    return workdir


@pytest.fixture(scope="module")
def batch_eval(run_dir):
    """The trainer's evaluation path: the task's held-out rows through VQATask.logits on the restored state.
    Returns (task, rows of kind 'digit', the argmax answer token at each row's first answer position, margin)."""
    config, base_cfg = read_run(run_dir)
    task = VQATask(config, run_dir)
    state = load_state(run_dir, base_cfg, models.get("vlm"))
    digit = np.flatnonzero(task.eval_data["kind"] == vqa.KINDS.index("digit"))[:64]
    batch = {k: v[digit] for k, v in task.eval_data.items()}
    logits = np.asarray(jax.jit(task.logits)(state["params"], state.get("frozen"), batch))
    at = batch["prefix_len"] - 1
    first = logits[np.arange(len(digit)), at]
    top2 = np.sort(first, axis=-1)[:, -2:]
    return task, batch, first.argmax(-1), top2[:, 1] - top2[:, 0]


def _question(task, batch, i) -> str:
    """The evaluation row's own question text (the phrasings cycle over the rows)."""
    ids = batch["inputs"][i, : batch["prefix_len"][i]]
    return task.tokenizer.decode(ids[ids != task.tokenizer.image_id])


def _write_png(batch, i, path):
    image_io.save_image_png(batch["images"][i, 0], path)
    return path


def test_sample_image_gives_the_batch_evaluation_answer(run_dir, batch_eval, tmp_path, capsys):
    task, batch, answer_ids, margin = batch_eval
    before = _snapshot(run_dir)
    for i in np.argsort(-margin)[:2]:  # the rows the uint8 rounding of a PNG cannot flip
        png = _write_png(batch, i, tmp_path / f"held_out_{i}.png")
        # the run's preprocessing reads the PNG back as the evaluation's own array, up to uint8 rounding
        run_shape = task.base_cfg.vit.image_size
        got = image_io.load_image(png, (run_shape, run_shape), 1)
        np.testing.assert_allclose(got, batch["images"][i, 0], atol=0.5 / 255 + 1e-6)
        question = _question(task, batch, i)
        assert sample_cli.main([f"--workdir={run_dir}", f"--image={png}", f"--prompt={question}"]) == 0
        printed = capsys.readouterr().out.splitlines()[-1]
        want = int(answer_ids[i])
        eos = task.tokenizer.eos_id
        # greedy's first token is the evaluation's argmax; an <eos> there is the empty answer
        assert printed.split(" ")[0] == ("" if want == eos else task.tokenizer.decode([want]))
    assert _snapshot(run_dir) == before


def test_two_images_and_sampling_flags(run_dir, batch_eval, tmp_path, capsys):
    _, batch, _, _ = batch_eval
    a, b = _write_png(batch, 0, tmp_path / "a.png"), _write_png(batch, 1, tmp_path / "b.png")
    argv = [f"--workdir={run_dir}", f"--image={a}", f"--image={b}"]
    assert sample_cli.main([*argv, "--prompt=which is larger, the first or the second?"]) == 0
    capsys.readouterr()
    placed = "<image> is the first or the second number larger? <image>"
    assert sample_cli.main([*argv, f"--prompt={placed}", "--num_samples=2", "--temperature=1", "--seed=3"]) == 0
    out = capsys.readouterr().out
    assert out.count(sample_cli.SEPARATOR) == 1


def test_loaded_run_is_what_the_task_evaluates(run_dir):
    """load_vlm_run recombines the checkpoint's trainable/frozen trees exactly as VQATask.params does."""
    config, base_cfg = read_run(run_dir)
    task = VQATask(config, run_dir)
    state = load_state(run_dir, base_cfg, models.get("vlm"))
    run = vlm_run.load_vlm_run(run_dir)
    want = task.params(state["params"], state.get("frozen"))
    assert jax.tree.structure(want) == jax.tree.structure(run.params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(run.params)))
    assert run.model_cfg == task.model_cfg


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def _huge_png(path):
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
    path.write_bytes(png + chunk(b"IDAT", zlib.compress(b"\x00" * 20001)) + chunk(b"IEND", b""))
    return path


def test_bad_input_is_one_line_and_writes_nothing(run_dir, batch_eval, tmp_path, capsys):
    _, batch, _, _ = batch_eval
    good = _write_png(batch, 0, tmp_path / "good.png")
    (tmp_path / "text.png").write_text("not a picture\n")
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {
        "not found": tmp_path / "missing.png",
        "not an image": tmp_path / "text.png",
        "0-byte": tmp_path / "empty.png",
        "pixel limit": _huge_png(tmp_path / "huge.png"),
    }
    before = _snapshot(run_dir)
    for needle, path in cases.items():
        assert sample_cli.main([f"--workdir={run_dir}", f"--image={path}", f"--prompt={QUESTION}"]) == 2
        assert needle in _one_line_error(capsys)
    two = [f"--image={good}", f"--image={good}"]
    assert sample_cli.main([f"--workdir={run_dir}", *two, "--prompt=<image> what digit is this?"]) == 2
    assert "2 images given but the prompt has only 1" in _one_line_error(capsys)
    assert sample_cli.main([f"--workdir={run_dir}", f"--prompt={QUESTION}"]) == 2
    assert "pass the picture(s) with --image" in _one_line_error(capsys)
    assert sample_cli.main([f"--workdir={run_dir}", f"--image={good}", "--prompt=what colour is the zebra?"]) == 2
    assert "not in the word tokenizer's vocabulary" in _one_line_error(capsys)
    assert _snapshot(run_dir) == before
    # a text run given --image: refused from its config.json alone
    text_run = tmp_path / "text_run"
    text_run.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["family"] = "gpt"
    (text_run / "config.json").write_text(json.dumps(config))
    before = _snapshot(text_run)
    assert sample_cli.main([f"--workdir={text_run}", f"--image={good}", f"--prompt={QUESTION}"]) == 2
    assert "needs a multimodal run" in _one_line_error(capsys)
    assert attention_cli.main([f"--workdir={text_run}", f"--image={good}", f"--prompt={QUESTION}"]) == 2
    assert "needs a multimodal run" in _one_line_error(capsys)
    assert _snapshot(text_run) == before


def test_chat_image_command(run_dir, batch_eval, tmp_path, capsys, monkeypatch):
    task, batch, answer_ids, margin = batch_eval
    i = int(np.argmax(margin))
    png = _write_png(batch, i, tmp_path / "d.png")
    question = _question(task, batch, i)
    lines = f"{QUESTION}\n/image {tmp_path / 'missing.png'}\n/image {png}\n{question}\n/image {png}\n/image {png}\n"
    lines += "which is larger, the first or the second?\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines.encode())))
    before = _snapshot(run_dir)
    assert chat_cli.main([f"--workdir={run_dir}"]) == 1  # two lines failed: no picture yet, a missing file
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert "attach one first with /image" in errors[0] and "(input line 1)" in errors[0]
    assert "not found" in errors[1] and "(input line 2)" in errors[1]
    out = captured.out.splitlines()
    assert out[0].startswith("(image 1 attached")
    want = int(answer_ids[i])
    assert out[1].split(" ")[0] == ("" if want == task.tokenizer.eos_id else task.tokenizer.decode([want]))
    assert out[3].startswith("(image 2 attached") and len(out) == 5
    assert _snapshot(run_dir) == before


def test_attention_heatmap_over_the_image(run_dir, batch_eval, tmp_path, capsys):
    _, batch, _, _ = batch_eval
    a, b = _write_png(batch, 2, tmp_path / "a.png"), _write_png(batch, 3, tmp_path / "b.png")
    out = tmp_path / "maps" / "attn.png"
    before = _snapshot(run_dir)
    argv = [f"--workdir={run_dir}", f"--image={a}", f"--image={b}", f"--out={out}"]
    assert attention_cli.main([*argv, "--prompt=which is larger, the first or the second?"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
    assert "attention on the image(s)" in capsys.readouterr().out
    assert _snapshot(run_dir) == before

    run = vlm_run.load_vlm_run(run_dir)
    question = "which is larger, the first or the second?"
    maps = image_attention.image_attention(run, question, run.load_images([a, b]))
    w = maps.weights  # [n_layer, H, L, L], straight from the model's sown attention
    assert np.allclose(w.sum(-1), 1.0, atol=1e-5)
    # recomputed by hand: the answer queries' mean attention on each image's key positions
    cfg = run.model_cfg
    prompt = run.prompt_ids(question, 2)
    keys = np.flatnonzero(prompt == cfg.image_token_id)
    assert maps.queries[0] == len(prompt) - 1 and maps.queries[-1] == w.shape[-1] - 1
    for img in range(2):
        mine = keys[img * cfg.num_image_tokens : (img + 1) * cfg.num_image_tokens]
        mass = w[:, :, maps.queries][..., mine].sum(-1).mean()
        np.testing.assert_allclose(maps.patches[img].sum(), mass, rtol=1e-5)
        np.testing.assert_allclose(maps.mass[img], mass, rtol=1e-5)
    assert maps.patches.shape == (2, 2, 2) and cfg.num_image_tokens == 4
    # the answer attends somewhere: text and images together hold all of it
    assert 0.0 < maps.mass.sum() < 1.0
    # one layer/head: its own map
    one = image_attention.image_attention(run, question, run.load_images([a, b]), layers=[0], heads=[1])
    np.testing.assert_allclose(
        one.mass[0], w[0, 1][maps.queries][:, keys[: cfg.num_image_tokens]].sum(-1).mean(), rtol=1e-5
    )
    with pytest.raises(ValueError, match="out of range"):
        image_attention.image_attention(run, question, run.load_images([a, b]), heads=[7])
