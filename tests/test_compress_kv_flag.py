"""`sample` / `chat --kv_int8`: decoding goes through the int8 KV cache, greedy text as the float cache's on
the tiny run, and one-line errors where the cache cannot apply."""

import dataclasses
import io
import sys

import pytest

from gpt_jax.cli import chat, sample
from gpt_jax.compression import kv_int8
from gpt_jax.config import ModelConfig
from gpt_jax.model import ExtendedConfig, Extensions


@pytest.fixture
def int8_caches(monkeypatch):
    """Counts the int8 caches built (so a test knows the flag reached the decode program)."""
    built, real = [], kv_int8.init_int8_cache
    monkeypatch.setattr(kv_int8, "init_int8_cache", lambda *a: built.append(a[1:]) or real(*a))
    return built


def greedy(workdir, capsys, *extra):
    argv = [f"--workdir={workdir}", "--max_new_tokens=12", "--temperature=0", "--prompt=ab", *extra]
    return sampled(argv, capsys)


def sampled(argv, capsys):
    assert sample.main(argv) == 0
    return capsys.readouterr().out


def test_sample_kv_int8_uses_the_int8_cache_and_matches_float(tiny_run, capsys, int8_caches):
    _, workdir, _ = tiny_run
    # sampled (the 40-step model's greedy text is all spaces): the same draws pick the same tokens unless
    # a draw falls within the int8 cache's tiny logit change of a boundary
    argv = [f"--workdir={workdir}", "--max_new_tokens=16", "--temperature=1", "--seed=0", "--prompt=ab"]
    ref = sampled(argv, capsys)
    assert int8_caches == []
    got = sampled(argv + ["--kv_int8"], capsys)
    assert int8_caches and got == ref and len(set(got.strip())) > 3


def test_sample_kv_int8_beam_search(tiny_run, capsys, int8_caches):
    _, workdir, _ = tiny_run
    ref = greedy(workdir, capsys, "--num_beams=2")
    got = greedy(workdir, capsys, "--num_beams=2", "--kv_int8")
    assert int8_caches and got == ref


def test_chat_kv_int8(tiny_run, capsys, monkeypatch, int8_caches):
    _, workdir, _ = tiny_run
    replies = []
    for extra in ([], ["--kv_int8"]):  # greedy: the int8 cache's reply is the float cache's (all spaces here)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Hello\n")))
        assert chat.main([f"--workdir={workdir}", "--max_new_tokens=6", "--temperature=0", *extra]) == 0
        replies.append(capsys.readouterr().out)
        assert bool(int8_caches) == bool(extra)
    assert replies[0] and replies[1] == replies[0]


def test_kv_int8_refused_on_a_multimodal_run(tiny_run, capsys, monkeypatch):
    _, workdir, _ = tiny_run
    monkeypatch.setattr(sample.vlm_run, "is_multimodal", lambda w: True)
    assert sample.main([f"--workdir={workdir}", "--kv_int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--kv_int8 applies to GPT text runs" in err and "\n" not in err


@pytest.mark.parametrize(
    "cfg,message",
    [
        (ModelConfig(n_layer=1, scan_layers=True), "model.scan_layers=True"),
        (ExtendedConfig(ModelConfig(n_layer=1), Extensions()), "is a ExtendedConfig"),
    ],
)
def test_for_flag_refuses_what_the_cache_cannot_serve(cfg, message):
    with pytest.raises(ValueError, match=message):
        kv_int8.for_flag(cfg, True)
    assert kv_int8.for_flag(cfg, False) is cfg


def test_for_flag_keeps_the_architecture():
    cfg = ModelConfig(n_layer=2, n_head=4, n_embd=64)
    got = kv_int8.for_flag(cfg, True)
    assert hasattr(got, "init_kv") and dataclasses.asdict(got) == dataclasses.asdict(cfg)
