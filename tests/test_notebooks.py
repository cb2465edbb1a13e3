"""The Colab notebooks run top to bottom (nbclient, python3 kernel, cwd = repo root) in their tiny mode
(GPT_JAX_NOTEBOOK_TINY=1), twice each: on one CPU device like a Colab CPU runtime, and on 8 fake CPU
devices (XLA_FLAGS in the kernel's environment) so the mesh cells shard as on a TPU v2-8. The ten
executions run two at a time (compilation is mostly single-threaded) in one module fixture.

nbclient/nbformat/ipykernel come with `.[dev]`; locally a missing one skips, with CI=true it fails.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import json
import math
import os
import pathlib
import re
import resource
import struct
import time

import pytest
from optional_deps import require

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ("quickstart", "ablation", "finetune_lora", "generate_chat", "multimodal")
DEVICES = (1, 8)
CELL_TIMEOUT_S = 300  # per cell; a notebook takes ~30-100 s here on a loaded machine
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass
class Executed:
    texts: list[str]  # per code cell: streams + text/plain + markdown, "<png>" per PNG shown
    stdouts: list[str]
    pngs: list[list[bytes]]
    tmp: pathlib.Path  # the kernel's TMPDIR, where tiny runs' tempfile.mkdtemp() workdirs land
    wall_s: float


def kernel_env(tmp: pathlib.Path, devices: int, **extra: str) -> dict[str, str]:
    """The kernel's environment: tiny mode, its own TMPDIR and TFDS cache (parallel kernels must not
    prepare one dataset into one folder at once), `devices` CPU devices, no accelerator declared."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "COLAB_TPU_ADDR", "TPU_NAME", "COLAB_GPU")}
    env.update(GPT_JAX_NOTEBOOK_TINY="1", TMPDIR=str(tmp), GPT_JAX_TFDS_DIR=str(tmp / "tfds"), TF_CPP_MIN_LOG_LEVEL="3")
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.update(extra)
    return env


def execute(nb, env: dict[str, str], tmp: pathlib.Path) -> Executed:
    """Runs a notebook (raises CellExecutionError, with the cell's traceback, if a cell fails)."""
    nbclient = require("nbclient")
    require("ipykernel")
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute(env=env)
    texts, stdouts, pngs = [], [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts, stdout, shown = [], "", []
        for out in cell.outputs:
            data = out.get("data", {})
            parts.append(out.get("text", "") + data.get("text/plain", "") + data.get("text/markdown", ""))
            if out.get("name") == "stdout":
                stdout += out.get("text", "")
            if "image/png" in data:
                parts.append("<png>")
                shown.append(base64.b64decode(data["image/png"]))
        texts.append(ANSI.sub("", "\n".join(parts)))
        stdouts.append(ANSI.sub("", stdout))
        pngs.append(shown)
    return Executed(texts, stdouts, pngs, tmp, time.perf_counter() - t0)


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children (the notebook kernels)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read(name: str):
    nbformat = require("nbformat")
    nb = nbformat.read(REPO / "colab" / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[tuple[str, int], Executed]:
    """Every notebook on 1 and on 8 devices, two kernels at a time; {(name, devices): Executed}."""
    jobs = {}
    for name in NOTEBOOKS:
        for devices in DEVICES:
            tmp = tmp_path_factory.mktemp(f"{name}_{devices}")
            jobs[(name, devices)] = (read(name), kernel_env(tmp, devices), tmp)
    t0, cpu0 = time.perf_counter(), children_cpu_s()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(execute, *job) for key, job in jobs.items()}
        results = {key: f.result() for key, f in futures.items()}
    times = ", ".join(f"{n}/{d}: {r.wall_s:.0f} s" for (n, d), r in results.items())
    # the kernels' CPU time: what the executions cost whatever else shares the cores
    print(f"\nnotebooks: {time.perf_counter() - t0:.0f} s wall, {children_cpu_s() - cpu0:.0f} s kernel CPU ({times})")
    return results


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's signature and IHDR chunk; AssertionError if it is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    assert data[-8:-4] == b"IEND", "truncated PNG"
    return struct.unpack(">II", data[16:24])


def workdir_with(r: Executed, name: str) -> pathlib.Path:
    (path,) = [p for p in r.tmp.glob(f"*/{name}") if p.is_dir()]
    return path


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_valid_tpu_notebooks_without_outputs(name):
    nb = read(name)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.accelerator == "TPU" and nb.metadata.colab.gpuType == "V28"  # opens on a TPU v2-8
    badge = f"https://colab.research.google.com/github/OWNER/REPO/blob/main/colab/{name}.ipynb"
    assert badge in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = code[0].source
    assert "GPT_JAX_NOTEBOOK_TINY" in setup and "runtime_check.check_runtime()" in setup
    assert '"--no-deps"' in setup and '"-e", "."' in setup and "install_missing()" in setup
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name}: clear outputs before committing"
    assert name in (REPO / "colab" / "README.md").read_text()


def test_tpu_runtime_with_cpu_jax_fails_in_the_setup_cell(tmp_path):
    """A runtime that declares a TPU ($COLAB_TPU_ADDR, as Colab's TPU runtime) while this jax sees only CPU:
    the setup cell stops with one message naming the problem and the fix."""
    nbclient = require("nbclient")
    nb = read("quickstart")
    nb.cells = [next(c for c in nb.cells if c.cell_type == "code")]
    with pytest.raises(nbclient.exceptions.CellExecutionError) as e:
        execute(nb, kernel_env(tmp_path, 1, COLAB_TPU_ADDR="10.0.0.2:8470"), tmp_path)
    msg = ANSI.sub("", str(e.value))
    assert "AcceleratorNotVisible" in msg
    assert "a TPU is attached ($COLAB_TPU_ADDR=10.0.0.2:8470) but JAX sees only CPU" in msg
    assert 'pip install -U "jax[tpu]"' in msg


@pytest.mark.parametrize("devices", DEVICES)
def test_quickstart_trains_shards_plots_and_samples(executed, devices):
    """The tiny run (20 steps, char-level) learns: its logged train and validation losses fall, the last
    well below ln(65) = 4.17 (measured: val 3.78 -> 3.47, train 3.87 -> 3.41); the mesh cell shows the
    kernel split over fsdp on 8 devices; the loss curve and attention maps are real PNGs, shown and
    saved in the workdir; the sample continues the prompt with the 32 characters asked for."""
    r = executed[("quickstart", devices)]
    setup, data, where, train, mesh, loss, sample, attention = r.texts
    assert f"backend cpu ({devices} x cpu); recipe configs/tiny.py (tiny" in setup
    assert "tiny Shakespeare found" in data
    assert "step: 20" in train and "mfu_causal" in train

    workdir = workdir_with(r, "quickstart_cpu")
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "val_loss"):
        losses = [rec[key] for rec in records if key in rec]
        assert len(losses) == 2 and losses[-1] < losses[0] < math.log(65), (key, losses)
        assert losses[-1] < math.log(65) - 0.5, (key, losses)
    assert f"val_loss: {losses[-1]}" in train  # the cell printed the run's own summary

    expected_mesh = {"data": 1, "fsdp": devices, "tensor": 1} if devices > 1 else {"data": 1, "fsdp": 1, "tensor": 1}
    assert f"mesh {expected_mesh}" in mesh
    if devices > 1:
        assert "'fsdp'" in mesh and "CPU 0" in mesh and "CPU 7" in mesh  # drawn over all 8 devices
    else:
        assert "CPU 0" in mesh and "CPU 1" not in mesh

    for shown, file in ((r.pngs[5], "loss.png"), (r.pngs[7], "attention.png")):
        (png,) = shown
        assert png == (workdir / file).read_bytes()  # what the cell displays is the file it wrote
        width, height = png_size(png)
        assert width >= 100 and height >= 100, (file, width, height)

    prompt, max_new_tokens = "ROMEO:", 32
    text = r.stdouts[6]  # without the checkpoint library's warnings on stderr
    assert text.startswith(prompt) and text.endswith("\n"), text
    continuation = text[len(prompt) : -1]
    assert len(continuation) == max_new_tokens and continuation.strip(), repr(text)


@pytest.mark.parametrize("devices", DEVICES)
def test_ablation_sweeps_and_shows_results(executed, devices):
    *_, run, results = executed[("ablation", devices)].texts
    assert "2/2 runs ok" in run
    assert "| pos=learned | learned |" in results and "| pos=rope | rope |" in results
    assert "<png>" in results


@pytest.mark.parametrize("devices", DEVICES)
def test_finetune_lora_trains_few_parameters_and_chats(executed, devices):
    r = executed[("finetune_lora", devices)]
    setup, _, _, base, lora, mesh, chat = r.texts
    assert "recipe configs/finetune/alpaca_sft.py" in setup and "base: step 10" in base
    pct = float(re.search(r"trainable_pct: ([0-9.]+)", lora).group(1))
    assert 0 < pct < 50, lora  # LoRA factors only (the tiny base is small, so their share is large)
    assert "adapter file: ['adapter.safetensors']" in lora
    config = json.loads((workdir_with(r, "alpaca_lora_cpu") / "config.json").read_text())
    assert config["peft"]["method"] == "lora" and config["init_from"].endswith("base_cpu")
    assert f"'fsdp': {devices}" in mesh
    replies = [line for line in r.stdouts[6].splitlines() if line.startswith("assistant> ")]
    assert len(replies) == 2 and re.search(r"[12] turns kept", chat)


@pytest.mark.parametrize("devices", DEVICES)
def test_generate_chat_generates_streams_and_chats(executed, devices):
    r = executed[("generate_chat", devices)]
    out = r.stdouts
    assert "2 layers, block 64, vocab 256" in out[2]
    rows = {}
    for block in out[3].split("--- ")[1:]:
        head, *lines = block.strip().splitlines()
        rows[head] = lines
    assert list(rows) == ["greedy", "top-k 40, T=0.8", "top-p 0.9, stop at a blank line"]
    assert all(len(v) >= 3 for v in rows.values())
    assert rows["greedy"][0].startswith("'ROMEO:")
    assert out[4].startswith("KING HENRY:")
    assert int(re.search(r"\((\d+) chunks\)", out[4]).group(1)) >= 2  # the prefill's token, then chunks of 8
    assert out[5].count("assistant> ") == 2 and re.search(r"[12] turns kept", out[5])  # old turns drop to fit


@pytest.mark.parametrize("devices", DEVICES)
def test_multimodal_trains_and_answers_about_an_image(executed, devices):
    r = executed[("multimodal", devices)]
    assert "recipe configs/multimodal/sklearn_digits_smoke.py" in r.texts[0]
    assert "step: 10" in r.texts[2] and "exact match on the held-out images" in r.texts[2]
    answers = re.findall(r"'(.+?)' -> '(.*)'", r.stdouts[3])
    assert [q for q, _ in answers] == ["What digit is this?", "what number is in the image?"]
    assert r.pngs[3], "the held-out image is shown"
    png_size(r.pngs[3][0])
