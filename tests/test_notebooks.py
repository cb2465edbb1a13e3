"""The Colab notebooks run top to bottom (nbclient, python3 kernel, cwd = repo root) in their tiny
mode (GPT_JAX_NOTEBOOK_TINY=1): a tiny model, a few steps, on one CPU device like a Colab CPU runtime.

nbclient/nbformat/ipykernel come with `.[dev]`; locally a missing one skips, with CI=true it fails.
"""

from __future__ import annotations

import pathlib

import pytest
from optional_deps import require

REPO = pathlib.Path(__file__).resolve().parents[1]
CELL_TIMEOUT_S = 300  # per cell; a notebook takes ~30-60 s here, more on a loaded machine


def execute(name: str) -> list[str]:
    """Run colab/<name>.ipynb; returns each code cell's text output (streams + text/plain + markdown)."""
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    nb = nbformat.read(REPO / "colab" / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell fails
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for out in cell.outputs:
            data = out.get("data", {})
            parts.append(out.get("text", "") + data.get("text/plain", "") + data.get("text/markdown", ""))
            if "image/png" in data:
                parts.append("<png>")
        texts.append("\n".join(parts))
    return texts


@pytest.fixture(autouse=True)
def kernel_env(monkeypatch, tfds_cache):
    """The kernel inherits this environment: tiny mode, the session's TFDS cache, one CPU device."""
    monkeypatch.setenv("GPT_JAX_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("GPT_JAX_TFDS_DIR", str(tfds_cache))
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # not the suite's 8 fake devices
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")


def test_notebooks_are_valid_v4_without_outputs():
    nbformat = require("nbformat")
    for name in ("quickstart", "ablation"):
        nb = nbformat.read(REPO / "colab" / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "GPT_JAX_NOTEBOOK_TINY" in code[0].source and "default_backend" in code[0].source
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name}: clear outputs before committing"


def test_quickstart_trains_plots_and_samples():
    setup, data, train, curve, sample, attention = execute("quickstart")
    assert "recipe configs/tiny.py (tiny" in setup
    assert "tiny Shakespeare found" in data
    assert "val_loss" in train and "step: 20" in train
    assert "<png>" in curve and "<png>" in attention
    assert "ROMEO:" in sample


def test_ablation_sweeps_and_shows_results():
    _, _, run, results = execute("ablation")
    assert "2/2 runs ok" in run
    assert "| pos=learned | learned |" in results and "| pos=rope | rope |" in results
    assert "<png>" in results
