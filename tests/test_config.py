"""Run-config tests: command-line overrides, clear one-line errors (unknown keys, bad types,
missing data, conflicting workdir, bad mesh), the CLI's exit code, and every shipped config."""

from __future__ import annotations

import ast
import itertools
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from gpt_jax import run_config
from gpt_jax.cli import flags as cli_flags
from gpt_jax.config import FIELDS, model_config_from

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "base"))


def flat_keys(cfg, prefix="") -> set[str]:
    out = set()
    for k in cfg:
        v = cfg[k]
        if hasattr(v, "keys"):
            out |= flat_keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


# ----------------------------------------------------------------------------- overrides


def parse_args(argv):
    """The entry points' parser (gpt_jax.cli.flags) with main's one flag."""
    return cli_flags.parse(argv, [cli_flags.Flag("workdir")], usage="usage: test", config=True)


def test_parse_args_sets_typed_values():
    config, flags = parse_args(
        [
            f"--config={REPO}/configs/tiny.py",
            "--config.model.n_layer=3",
            "--config.model.pos=rope",
            "--config.optim.lr=0.01",
            "--config.model.bias=False",
            "--config.model.n_kv_head=1",  # a None placeholder takes an int
            "--config.data.manual_dir=/some/where",
            "--workdir=x",
        ]
    )
    assert config.model.n_layer == 3 and type(config.model.n_layer) is int
    assert config.model.pos == "rope"
    assert config.optim.lr == 0.01 and type(config.optim.lr) is float
    assert config.model.bias is False
    assert config.model.n_kv_head == 1
    assert config.data.manual_dir == "/some/where"
    assert flags == {"workdir": "x"}
    # untouched values come from the file
    assert config.model.n_embd == 32 and config.train.batch_size == 8


def test_int_literal_for_a_float_field_stays_float():
    config, _ = parse_args([f"--config={REPO}/configs/tiny.py", "--config.optim.lr=1", "--config.model.dropout=0"])
    assert config.optim.lr == 1.0 and type(config.optim.lr) is float
    assert type(config.model.dropout) is float


def test_relative_config_path_from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)
    config, _ = parse_args(["--config=configs/tiny.py"])
    assert config.model.n_layer == 2


@pytest.mark.parametrize(
    "dotted,suggestion",
    [("model.n_layr", "model.n_layer"), ("optim.lrr", "optim.lr"), ("train.batchsize", "train.batch_size")],
)
def test_unknown_key_is_one_line_with_suggestion(dotted, suggestion):
    with pytest.raises(ValueError) as e:
        parse_args([f"--config={REPO}/configs/tiny.py", f"--config.{dotted}=3"])
    msg = str(e.value)
    assert "\n" not in msg
    assert repr(dotted) in msg
    assert f"did you mean {suggestion!r}" in msg


def test_unknown_key_without_close_match_lists_the_keys():
    with pytest.raises(ValueError) as e:
        parse_args([f"--config={REPO}/configs/tiny.py", "--config.optim.zzzzzz=3"])
    assert "'optim.zzzzzz'" in str(e.value) and "weight_decay" in str(e.value)


@pytest.mark.parametrize(
    "arg,key",
    [
        ("train.batch_size=abc", "train.batch_size"),
        ("optim.lr=fast", "optim.lr"),
        ("model.n_layer=2.5", "model.n_layer"),
    ],
)
def test_wrong_type_override_is_a_clear_error(arg, key):
    with pytest.raises(ValueError) as e:
        parse_args([f"--config={REPO}/configs/tiny.py", f"--config.{arg}"])
    msg = str(e.value)
    assert "\n" not in msg
    assert key in msg and arg.split("=")[1] in msg


def test_other_argument_errors():
    with pytest.raises(ValueError, match="no --config"):
        parse_args(["--config.model.n_layer=3"])
    with pytest.raises(ValueError, match="unexpected argument"):
        parse_args([f"--config={REPO}/configs/tiny.py", "stray"])
    config, flags = parse_args(["--config", f"{REPO}/configs/tiny.py", "--workdir", "w"])  # space-separated
    assert config.model.n_layer == 2 and flags == {"workdir": "w"}
    with pytest.raises(FileNotFoundError, match="nope.py"):
        parse_args(["--config=configs/nope.py"])


# ----------------------------------------------------------------------------- errors at start-up


def test_missing_dataset_dir_names_the_path_and_env_var(tiny_config, tmp_path):
    from gpt_jax.trainer import Trainer

    config = tiny_config()
    config.data.manual_dir = "/nonexistent"
    with pytest.raises(FileNotFoundError) as e:
        Trainer(config, tmp_path / "w")
    msg = str(e.value)
    assert "/nonexistent" in msg and "GPT_JAX_DATA_DIR" in msg and "manual_dir" in msg


def test_missing_dataset_dir_from_env_var(tiny_config, tmp_path, monkeypatch):
    from gpt_jax.trainer import train_and_evaluate

    monkeypatch.setenv("GPT_JAX_DATA_DIR", "/nonexistent_env_dir")
    with pytest.raises(FileNotFoundError) as e:
        train_and_evaluate(tiny_config(), tmp_path / "w")
    assert "/nonexistent_env_dir" in str(e.value) and "GPT_JAX_DATA_DIR" in str(e.value)


def test_workdir_with_a_different_model_is_refused(tiny_run, tmp_path):
    from gpt_jax.trainer import Trainer

    config, run_dir, _ = tiny_run
    workdir = tmp_path / "run"
    shutil.copytree(run_dir, workdir)  # leave the shared run untouched
    before = (workdir / "model_config.json").read_text()

    # the same config resumes fine (no error; nothing compiled by the constructor)
    Trainer(config, workdir, write=False)

    changed = config.copy_and_resolve_references()
    changed.model.n_layer = 3
    with pytest.raises(ValueError) as e:
        Trainer(changed, workdir)
    msg = str(e.value)
    assert "model.n_layer" in msg and str(workdir) in msg
    assert "\n" not in msg
    assert (workdir / "model_config.json").read_text() == before  # not overwritten

    # a training-only change (not the model) is allowed
    longer = config.copy_and_resolve_references()
    longer.train.num_steps = 80
    Trainer(longer, workdir, write=False)


def test_mesh_that_does_not_divide_the_devices(tiny_config, tmp_path):
    from gpt_jax import sharding as shd
    from gpt_jax.trainer import Trainer

    config = tiny_config()
    config.mesh.data = 3
    with pytest.raises(ValueError) as e:
        Trainer(config, tmp_path / "w")
    assert "8" in str(e.value) and "devices" in str(e.value)
    with pytest.raises(ValueError, match="8 devices"):
        shd.mesh_shape({"data": 3, "fsdp": -1, "tensor": 1}, 8)
    with pytest.raises(ValueError, match="more than one -1"):
        shd.mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="unknown mesh axis"):
        shd.mesh_shape({"dat": 2}, 8)
    assert shd.mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
    assert shd.mesh_shape({"data": -1, "fsdp": 1, "tensor": 1}, 8) == (8, 1, 1)


def test_batch_not_divisible_by_data_shards(tiny_config, tmp_path):
    from gpt_jax.trainer import Trainer

    config = tiny_config()
    config.train.batch_size = 12  # 8 data-parallel shards by default
    with pytest.raises(ValueError, match="data-parallel"):
        Trainer(config, tmp_path / "w")
    config.train.batch_size, config.train.grad_accum = 8, 3
    with pytest.raises(ValueError, match="grad_accum"):
        Trainer(config, tmp_path / "w2")


# ----------------------------------------------------------------------------- the CLI


def run_cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "gpt_jax.main", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--config=configs/tiny.py", "--config.model.n_layr=3"], "did you mean 'model.n_layer'"),
        (["--config=configs/tiny.py", "--config.train.batch_size=abc"], "train.batch_size"),
        (["--config=configs/tiny.py"], "--workdir is required"),
        (["--config=configs/tiny.py", "--workdr=x"], "workdr"),
    ],
)
def test_cli_errors_exit_2_with_one_line(args, expect, tmp_path):
    workdir = tmp_path / "w"
    if not any(a.startswith("--workd") for a in args) and "--workdir is required" not in expect:
        args = [*args, f"--workdir={workdir}"]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and expect in lines[0]
    assert proc.stdout == ""
    assert not workdir.exists()  # failed before touching anything


# ----------------------------------------------------------------------------- shipped configs


def test_configs_are_discovered():
    assert set(CONFIGS) >= {"tiny", "shakespeare_char_cpu", "shakespeare_char", "gpt2_124m"}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_and_builds_a_model(name):
    from configs.base import base_config

    config = run_config.load_config(str(REPO / "configs" / f"{name}.py"))
    # base.py lists every key: a config file may only set them, never add new ones
    assert flat_keys(config) == flat_keys(base_config()), name
    assert set(config.model.keys()) - {"preset", "family"} <= set(FIELDS)
    cfg = model_config_from(config.model, vocab_size=config.model.vocab_size or 65)
    assert cfg.n_embd % cfg.n_head == 0
    # the global batch splits into micro-batches
    assert config.train.batch_size % config.train.grad_accum == 0
    assert config.train.steps_per_call >= 1


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_docstring_has_run_time_expect(name):
    path = REPO / "configs" / f"{name}.py"
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"{path} has no docstring"
    lines = doc.splitlines()
    for tag in ("Run:", "Time:", "Expect:"):
        hits = [ln for ln in lines if ln.startswith(tag)]
        assert len(hits) == 1, f"{path}: expected one '{tag}' line"
        assert hits[0][len(tag) :].strip(), f"{path}: empty '{tag}' line"
    # the Run: block (it may continue on indented lines) has the command for this very file
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Run:"))
    block = [lines[start], *itertools.takewhile(lambda ln: ln.startswith(" "), lines[start + 1 :])]
    assert any(f"gpt_jax.main --config=configs/{name}.py" in ln for ln in block), block


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_docstring_has_no_placeholders(name):
    doc = ast.get_docstring(ast.parse((REPO / "configs" / f"{name}.py").read_text()))
    assert "PLACEHOLDER" not in doc, f"configs/{name}.py still has placeholder Time:/Expect: values"


def test_check_and_save_writes_both_files(tmp_path):
    config = run_config.load_config(str(REPO / "configs" / "tiny.py"))
    fields = {"n_layer": 2, "n_embd": 32}
    run_config.check_and_save(tmp_path, config, fields)
    assert json.loads((tmp_path / "model_config.json").read_text()) == fields
    assert json.loads((tmp_path / "config.json").read_text())["model"]["n_layer"] == 2
    run_config.check_and_save(tmp_path, config, fields)  # same model: fine
    with pytest.raises(ValueError, match=r"model\.n_embd=32.*64"):
        run_config.check_and_save(tmp_path, config, {"n_layer": 2, "n_embd": 64})


def test_config_string_argument_reaches_get_config(tmp_path):
    """`--config=path:arg` calls get_config(arg), as big_vision's config strings do."""
    f = tmp_path / "with_arg.py"
    f.write_text(
        "from gpt_jax.base_config import base_config\n\n\n"
        "def get_config(arg=None):\n    c = base_config()\n    c.train.num_steps = int(arg or 1)\n    return c\n"
    )
    config, flags = parse_args([f"--config={f}:77", "--config.optim.lr=0.5", "--workdir=w"])
    assert config.train.num_steps == 77 and config.optim.lr == 0.5 and flags == {"workdir": "w"}
