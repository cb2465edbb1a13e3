"""benchmarks.vs_nanogpt: nanoGPT's log is parsed (eval and warm-up iters dropped), and a tiny interleaved
run against a fake nanoGPT (prints its log format) gives rounds, medians and the ratio."""

from __future__ import annotations

import json

import pytest

from benchmarks import vs_nanogpt as vs

FAKE_TRAIN = """
import sys
n = int([a for a in sys.argv if a.startswith("--max_iters=")][0].split("=")[1])
print("step 0: train loss 4.2000, val loss 4.2100")
for i in range(n + 1):
    print(f"iter {i}: loss 3.{i:04d}, time {900.0 if i == 0 else 20.0 + i % 2:.2f}ms, mfu -100.00%")
"""


def test_parse_drops_warmup_and_eval_iters():
    log = "\n".join(
        ["step 0: train loss 4.2, val loss 4.2"]
        + [f"iter {i}: loss 2.5, time {1000.0 if i in (0, 1, 250) else 30.0}ms, mfu 1.00%" for i in range(252)]
    )
    ms = vs.parse_step_ms(log)
    assert len(ms) == 252 - 3 and set(ms) == {30.0}
    assert vs.parse_step_ms("no log here") == []


@pytest.fixture
def fake_nanogpt(tmp_path):
    ng = tmp_path / "ng"
    (ng / "data" / "shakespeare_char").mkdir(parents=True)
    (ng / "config").mkdir()
    (ng / "train.py").write_text(FAKE_TRAIN)
    (ng / "data" / "shakespeare_char" / "prepare.py").write_text("open('train.bin', 'wb').close()\n")
    return ng


def test_tiny_interleaved_run(fake_nanogpt, tmp_path, tfds_cache, monkeypatch, capsys):
    monkeypatch.setenv("GPT_JAX_TFDS_DIR", str(tfds_cache))
    assert vs.main([f"--nanogpt_dir={fake_nanogpt}", "--recipe=tiny", "--rounds=2", "--steps=10"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    rounds = [x for x in lines if "round" in x]
    assert len(rounds) == 2 and all(r["nanogpt_ms_per_step"] in (20.0, 21.0, 20.5) for r in rounds)
    s = lines[-1]["summary"]
    assert s["ours_ms_per_step"] > 0 and s["nanogpt_tokens_per_sec"] == pytest.approx(
        8 * 32 / s["nanogpt_ms_per_step"] * 1e3
    )
    assert s["ratio_median_of_rounds"] > 0 and {"cpu_model", "avx512_bf16", "amx"} <= s.keys()


def test_bad_flags(fake_nanogpt, tmp_path):
    from gpt_jax.cli import flags

    with pytest.raises(flags.UsageError, match="is not one of"):
        vs.main([f"--nanogpt_dir={fake_nanogpt}", "--recipe=tpu"])
    with pytest.raises(FileNotFoundError, match="train.py not found"):
        vs.main([f"--nanogpt_dir={tmp_path}/nowhere", "--no_speed"])
