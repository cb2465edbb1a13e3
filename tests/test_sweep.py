"""experiments.sweep (cross product, commands, resumable runs, results) and the gpt_jax.analysis.plot CLI.

One tiny 2-setting x 2-seed sweep (4 steps a run, in-process so compiled code is shared) is made
once per module; the resume test then runs the default subprocess path once.
"""

import csv
import json
import os
import pathlib
import shlex
import shutil

import pytest

from experiments import sweep
from gpt_jax.analysis import plot
from gpt_jax.cli import plot as plot_cli

TINY = [
    "train.num_steps=4",
    "train.steps_per_call=2",
    "train.eval_every=2",
    "train.log_every=2",
    "train.eval_batches=1",
    "checkpoint.every=2",
    "sample.num_tokens=0",
    "train.peak_flops=1e11",  # skip measuring the CPU's matmul peak
]
# The swept key leaves the compiled train/eval programs unchanged (no sample is drawn), so the four
# runs share one compilation; the sweep machinery does not care what it sweeps.
SWEEP = ["--config=configs/tiny.py", "--sweep=sample.temperature=0.8,1.0", "--seeds=2"]
SETTINGS = ("temperature=0.8", "temperature=1.0")
VERSIONED = ("jax", "flax", "optax", "orbax-checkpoint", "numpy", "python")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])  # the commands use configs/tiny.py


def fixed(tfds_cache):
    return ["--set", *TINY, f"data.tfds_dir={tfds_cache}"]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, tfds_cache):
    out, cwd = tmp_path_factory.mktemp("sweep"), os.getcwd()
    os.chdir(pathlib.Path(__file__).resolve().parents[1])
    try:
        assert sweep.main([*SWEEP, f"--out={out}", "--in_process", *fixed(tfds_cache)]) == 0
    finally:
        os.chdir(cwd)
    return out


# ----------------------------------------------------------------------------- planning


def test_cross_product_names_and_count(tmp_path):
    sweeps = [sweep.parse_sweep("model.pos=learned,sinusoidal,rope"), sweep.parse_sweep("optim.lr=1e-3,3e-3")]
    runs = sweep.plan(sweeps, [("model.n_layer", "2")], 3, tmp_path)
    assert len(runs) == 3 * 2 * 3
    names = list(dict.fromkeys(r.setting for r in runs))
    assert names == [f"pos={p},lr={lr}" for p in ("learned", "sinusoidal", "rope") for lr in ("1e-3", "3e-3")]
    first = runs[0]
    assert first.workdir == tmp_path / "runs" / "pos=learned,lr=1e-3" / "seed0"
    assert first.overrides == (("model.n_layer", "2"), ("model.pos", "learned"), ("optim.lr", "1e-3"), ("seed", "0"))
    assert [r.seed for r in runs[:3]] == [0, 1, 2]
    # leaves that repeat keep their full key; nothing swept is one 'base' setting
    assert sweep.short_keys(["model.dropout", "data.dropout", "optim.lr"]) == ["model.dropout", "data.dropout", "lr"]
    assert {r.setting for r in sweep.plan([], [], 2, tmp_path)} == {"base"}


def test_print_commands_runs_nothing(tmp_path, capsys, tfds_cache):
    out = tmp_path / "out"
    assert sweep.main([*SWEEP, f"--out={out}", "--print_commands", *fixed(tfds_cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    for line, (t, seed) in zip(lines, [("0.8", 0), ("0.8", 1), ("1.0", 0), ("1.0", 1)]):
        args = shlex.split(line)
        assert args[:4] == ["python", "-m", "gpt_jax.main", "--config=configs/tiny.py"]
        assert f"--workdir={out}/runs/temperature={t}/seed{seed}" in args
        assert f"--config.sample.temperature={t}" in args and f"--config.seed={seed}" in args
        assert "--config.train.num_steps=4" in args
    assert not out.exists()


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--sweep=model.pos"], "is not KEY=V1,V2"),
        (["--sweep=model.pos="], "empty value"),
        (["--sweep=model.pos=learned,,rope"], "empty value"),
        (["--sweep=model.poss=rope"], "did you mean 'model.pos'"),
        (["--sweep=train.num_steps=abc"], "train.num_steps"),
        (["--seeds=0"], "--seeds=0"),
        (["--sweep=seed=1,2"], "--seeds"),
        (["--set", "model.n_layer"], "is not KEY=VALUE"),
        (["--sweep=model.pos=rope", "--set", "model.pos=learned"], "more than once"),
    ],
)
def test_bad_input_is_one_line(args, expect, tmp_path, capsys):
    out = tmp_path / "out"
    assert sweep.main(["--config=configs/tiny.py", f"--out={out}", *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expect in err[0], err
    assert not out.exists()  # nothing ran


# ----------------------------------------------------------------------------- a tiny sweep


def test_sweep_writes_runs_and_results(tiny_sweep):
    out = tiny_sweep
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {(r["setting"], r["seed"]) for r in rows} == {(s, k) for s in SETTINGS for k in "01"}
    for r in rows:
        assert r["status"] == "completed" and r["step"] == "4"
        assert float(r["best_val_loss"]) <= float(r["final_val_loss"]) < 10
        records = plot.read_records(r["workdir"])  # the numbers come from metrics.jsonl
        assert float(r["final_val_loss"]) == [x for x in records if "val_loss" in x][-1]["val_loss"]
        info = json.loads((pathlib.Path(r["workdir"]) / "run_info.json").read_text())
        assert info["seed"] == int(r["seed"]) and info["sweep"] == {"sample.temperature": r["setting"].split("=")[1]}
        assert info["git"]["commit"] and set(info["versions"]) >= set(VERSIONED)
        assert f"seed={r['seed']}" in info["overrides"]
        config = json.loads((pathlib.Path(r["workdir"]) / "config.json").read_text())
        assert config["seed"] == int(r["seed"]) and str(config["sample"]["temperature"]) == r["setting"].split("=")[1]
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + 2  # header, rule, one line per setting
    assert all("±" in line and line.rstrip().endswith("| 2 |") for line in table[2:])
    assert (out / "loss_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_rerun_skips_finished_runs(tiny_sweep, tfds_cache, capsys):
    metrics = sorted(tiny_sweep.glob("runs/*/seed*/metrics.jsonl"))
    before = [p.stat().st_mtime_ns for p in metrics]
    assert sweep.main([*SWEEP, f"--out={tiny_sweep}", "--in_process", *fixed(tfds_cache)]) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 4
    assert [p.stat().st_mtime_ns for p in metrics] == before


def test_changed_overrides_are_refused(tiny_sweep, tfds_cache, capsys):
    args = [*SWEEP, f"--out={tiny_sweep}", *fixed(tfds_cache), "optim.lr=1e-2"]
    assert sweep.main(args) == 2
    assert "was started with overrides" in capsys.readouterr().err


def test_summarize_only_rebuilds_results(tiny_sweep):
    for name in ("results.csv", "results.md", "loss_curves.png"):
        (tiny_sweep / name).unlink()
    assert sweep.main([f"--out={tiny_sweep}", "--summarize_only"]) == 0
    assert len((tiny_sweep / "results.md").read_text().splitlines()) == 4
    assert (tiny_sweep / "loss_curves.png").exists()


def test_interrupted_run_resumes_in_a_subprocess(tiny_sweep, tfds_cache, capsys):
    """A run killed after its step-2 checkpoint (no summary, no step-4 checkpoint, a stray log line)."""
    import jax

    workdir = tiny_sweep / "runs" / SETTINGS[1] / "seed1"
    (workdir / "summary.json").unlink()
    shutil.rmtree(workdir / "checkpoints" / "4")
    cache = jax.config.jax_compilation_cache_dir  # conftest's: the subprocess reuses its compiles
    env = {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3"} if cache else {}
    others = {p: p.stat().st_mtime_ns for p in tiny_sweep.glob("runs/*/seed*/metrics.jsonl") if p.parent != workdir}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        assert sweep.main([*SWEEP, f"--out={tiny_sweep}", *fixed(tfds_cache)]) == 0, (workdir / "train.log").read_text()
    finally:
        os.environ.clear()
        os.environ.update(old)
    out = capsys.readouterr().out
    assert out.count("finished, skipped") == 3 and f"{SETTINGS[1]} seed1: resuming" in out
    assert "resumed from step 2" in (workdir / "train.log").read_text()
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 4
    assert [r["step"] for r in plot.read_records(workdir)] == [2, 4]  # no duplicate steps
    info = json.loads((workdir / "run_info.json").read_text())
    assert len(info["attempts"]) == 2 and info["attempts"][-1]["ok"]
    assert {p: p.stat().st_mtime_ns for p in others} == others


# -------------------------------------------------------------------- gpt_jax.analysis.plot


def test_plot_cli_writes_png(tiny_sweep, tmp_path, capsys):
    a, b = (tiny_sweep / "runs" / s / "seed0" for s in SETTINGS)
    png = tmp_path / "loss.png"
    assert plot_cli.main([f"--workdir={a}", str(b), f"--out={png}"]) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert plot.labels_for([a, b]) == [f"{s}/seed0" for s in SETTINGS]
    assert plot_cli.main([f"--workdir={tmp_path / 'nope'}", f"--out={png}"]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().err
