"""benchmarks.run: the --quick suite writes the results JSON (keys, positive figures), a case in a child
process reports its own peak memory, partial runs merge into the file, bad flags are one-line errors."""

from __future__ import annotations

import json

import pytest

from benchmarks import run

TRAIN_KEYS = {
    "case", "config", "shape", "n_params", "dtype", "batch_size", "block_size", "ms_per_step", "tokens_per_sec",
    "mfu", "gflops_per_sec", "peak_flops", "compile_s", "devices", "state_bytes", "date", "commit",
}  # fmt: skip
HEADER_KEYS = {
    "machine", "backend", "device_kind", "device_count", "cpu_model", "date", "jax_version", "git", "quick",
    "command", "peak_flops_per_device",
}  # fmt: skip


@pytest.fixture(scope="module")
def quick_json(tmp_path_factory, tfds_cache):
    """One in-process --quick run of the GPT-2 recipe's train step (scan_layers, remat, byte data) + memory."""
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    mp = pytest.MonkeyPatch()
    mp.setenv("GPT_JAX_TFDS_DIR", str(tfds_cache))
    try:
        assert run.main(["--quick", "--only=train,memory", "--cases=gpt2_124m", f"--out={out}", "--note=test"]) == 0
    finally:
        mp.undo()
    return out


def test_quick_train_json_has_the_figures(quick_json, capsys):
    doc = json.loads(quick_json.read_text())
    assert doc.keys() >= HEADER_KEYS
    assert doc["quick"] is True and doc["backend"] == "cpu" and doc["machine"].startswith("cpu-")
    assert doc["device_count"] == 8  # the suite's fake devices; the batch was rounded up to them
    (row,) = doc["train"]
    assert row.keys() >= TRAIN_KEYS, TRAIN_KEYS - row.keys()
    assert row["case"] == "gpt2_124m" and row["note"] == "test"
    for key in ("ms_per_step", "tokens_per_sec", "mfu", "gflops_per_sec", "peak_flops", "state_bytes", "n_params"):
        assert row[key] > 0, key
    assert row["batch_size"] % 8 == 0
    assert doc["peak_flops_per_device"]["float32"] == pytest.approx(row["peak_flops"] / 8)
    (mem,) = doc["memory"]
    assert mem["case"] == "gpt2_124m" and mem["peak_bytes"] >= mem["start_bytes"] > 0
    assert mem["memory_source"] == "process max RSS"
    assert "decode" not in doc or doc["decode"] == []


def test_partial_run_merges_rows(quick_json):
    """A later run of other cases keeps the earlier rows; a rerun of a case replaces its row."""
    head = {"date": "later", "git": {"commit": "abc"}, "note": None}
    fake = {"case": "shakespeare_char", "dtype": "float32", "peak_flops": 2e9, "devices": 1}
    doc = run.write_results(quick_json.with_name("merged.json"), head, {"train": [fake]})
    assert [r["case"] for r in doc["train"]] == ["shakespeare_char"]
    first = json.loads(quick_json.read_text())
    path = quick_json.with_name("merged2.json")
    path.write_text(json.dumps(first))
    doc = run.write_results(path, head, {"train": [fake]})
    assert [r["case"] for r in doc["train"]] == ["gpt2_124m", "shakespeare_char"]
    doc = run.write_results(path, head, {"train": [{**fake, "peak_flops": 4e9}]})
    assert len(doc["train"]) == 2 and doc["train"][-1]["peak_flops"] == 4e9 and doc["train"][-1]["date"] == "later"
    assert doc["memory"] == first["memory"]  # a section not rerun is kept


def test_decode_case_in_a_child_process():
    out = run.run_child({"kind": "decode", "case": "tiny", "batches": [2], "quick": True})
    assert "error" not in out, out.get("error")
    assert [r["batch"] for r in out["rows"]] == [2]
    assert all(r["decode_tokens_per_sec"] > 0 and r["prefill_ms"] > 0 for r in out["rows"])
    assert out["peak_bytes"] >= out["start_bytes"] > 0
    assert out["info"]["backend"] == "cpu"


def test_failed_case_is_a_row_not_a_crash():
    out = run.run_child({"kind": "train", "case": "no_such_case", "quick": True})
    assert out["error"].startswith("child exit")
    table = run.train_table([{"case": "no_such_case", "error": out["error"]}])
    assert "FAILED" in table


def test_bad_flags_are_one_line_errors(capsys):
    assert run.main(["--only=speed"]) == 2
    assert "is not a section; choose from train, decode, memory" in capsys.readouterr().err
    assert run.main(["--cases=gpt3"]) == 2
    assert "is not a case" in capsys.readouterr().err
    assert run.main(["--set", "train.batch_size"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_slug():
    assert run.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert run.slug("AMD EPYC 7B13 64-Core Processor") == "amd-epyc-7b13-64-core-processor"
