"""`python -m gpt_jax.compress quantize`: the quantized workdir loads in sample and evaluate; bad input
is one line and writes nothing; the source run is never modified."""

import hashlib
import json

import jax.numpy as jnp
import pytest

from gpt_jax.cli import compress, sample
from gpt_jax.compression.qtensor import QuantizedTensor
from gpt_jax.evaluation import evaluate_workdir
from gpt_jax.workdir import load_run


def tree_digest(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def quantized(tiny_run, tmp_path_factory):
    _, workdir, _ = tiny_run
    before = tree_digest(workdir)
    out = tmp_path_factory.mktemp("q") / "int8"
    assert compress.main(["quantize", f"--workdir={workdir}", f"--out={out}", "--bits=8"]) == 0
    assert tree_digest(workdir) == before  # the source is read only
    return workdir, out


def test_int8_workdir_keeps_int8_weights_and_evaluates_like_float(quantized):
    workdir, out = quantized
    record = json.loads((out / "quantization.json").read_text())
    assert record["bits"] == 8 and "h_0/mlp/fc/kernel" in record["matrices"]
    params = load_run(out)[2]
    assert isinstance(params["h_0"]["attn"]["out_kernel"], QuantizedTensor)
    assert params["h_0"]["attn"]["out_kernel"].q.dtype == jnp.int8
    got, ref = evaluate_workdir(str(out)), evaluate_workdir(str(workdir))
    assert got["step"] == ref["step"] and abs(got["val_loss"] - ref["val_loss"]) < 0.01


def test_quantized_workdir_samples(quantized, capsys):
    _, out = quantized
    assert sample.main([f"--workdir={out}", "--max_new_tokens=8", "--temperature=0", "--prompt=ab"]) == 0
    assert capsys.readouterr().out.strip()


def test_int4_gptq_workdir_loads_and_evaluates(tiny_run, tmp_path):
    _, workdir, _ = tiny_run
    out = tmp_path / "int4"
    argv = ["quantize", f"--workdir={workdir}", f"--out={out}", "--bits=4", "--group_size=32", "--method=gptq"]
    assert compress.main(argv + ["--calibration_windows=16"]) == 0
    params = load_run(out)[2]
    assert params["h_1"]["mlp"]["proj"]["kernel"].dtype == jnp.float32  # int4: dequantized at load
    ref = evaluate_workdir(str(workdir))["val_loss"]
    assert abs(evaluate_workdir(str(out))["val_loss"] - ref) < 0.1


@pytest.mark.parametrize(
    "args,message",
    [
        (["quantize", "--bits=3"], "--bits=3 is not supported"),
        (["quantize", "--bits=4", "--group_size=48"], "--group_size=48 does not divide"),
        (["quantize", "--method=awq"], "AWQ is not implemented"),
        (["prune", "--sparsity=1.0"], "--sparsity=1 must be >= 0 and < 1"),
        (["prune", "--sparsity=-0.1"], "--sparsity=-0.1 must be >= 0 and < 1"),
        (["prune", "--pattern=2:4", "--sparsity=0.3"], "--pattern=2:4 means sparsity 0.5"),
        (["prune", "--pattern=4:2"], "needs 0 < N < M"),
        (["shrink"], "the first argument must be quantize or prune"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys, args, message):
    _, workdir, _ = tiny_run
    before = tree_digest(workdir)
    out = tmp_path / "out"
    assert compress.main([*args, f"--workdir={workdir}", f"--out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert list(tmp_path.iterdir()) == [] and tree_digest(workdir) == before


def test_existing_out_is_refused(tiny_run, tmp_path, capsys):
    _, workdir, _ = tiny_run
    (tmp_path / "taken").mkdir()
    assert compress.main(["quantize", f"--workdir={workdir}", f"--out={tmp_path / 'taken'}"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert compress.main(["quantize", f"--workdir={workdir}", f"--out={workdir}"]) == 2
    assert "overlaps" in capsys.readouterr().err


def test_w8a8_workdir_evaluates_with_int8_activations(tiny_run, tmp_path):
    _, workdir, _ = tiny_run
    out = tmp_path / "w8a8"
    assert compress.main(["quantize", f"--workdir={workdir}", f"--out={out}", "--bits=8", "--act_bits=8"]) == 0
    fc = load_run(out)[2]["h_0"]["mlp"]["fc"]["kernel"]
    assert isinstance(fc, QuantizedTensor) and fc.act_bits == 8
    got, ref = evaluate_workdir(str(out))["val_loss"], evaluate_workdir(str(workdir))["val_loss"]
    assert got != ref and abs(got - ref) < 0.05  # scored with the activation rounding, and close
    bad = tmp_path / "bad"
    assert compress.main(["quantize", f"--workdir={workdir}", f"--out={bad}", "--bits=4", "--act_bits=8"]) != 0
    assert not bad.exists()
