"""A compressed workdir: written whole into a temporary directory and renamed into place, loaded by
gpt_jax.workdir like any run (`restore_params` is its one hook there).

Layout: the source's config.json, model_config.json, tokenizer.json (a classify run's label_map.json
too); checkpoints/<step>/ holding {"params", "step"} only (no optimizer state: a compressed run is for
inference; fine-tunes start from it with init_from); quantization.json (quantized runs) or pruning.json
(pruned runs, the sparsity report).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import jax.numpy as jnp
import numpy as np

from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
from gpt_jax.compression import quantize
from gpt_jax.paths import as_path, is_local

QUANT_FILE = "quantization.json"
COPIED = ("config.json", "model_config.json", "tokenizer.json", "label_map.json")  # label_map: classify runs


def check_paths(workdir, out) -> tuple[pathlib.Path, pathlib.Path]:
    """(source, output) paths, refused before any work if the output exists or overlaps the source."""
    if not is_local(out):
        raise ValueError(
            f"--out={out} is not a local directory; compress writes locally (atomic rename), copy it after"
        )
    src = pathlib.Path(workdir).resolve() if is_local(workdir) else as_path(workdir)
    dst = pathlib.Path(out).resolve()
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}/config.json not found; --workdir must be a run written by gpt_jax.main")
    if dst == src or src in dst.parents or dst in src.parents:
        raise ValueError(f"--out={out} overlaps --workdir={workdir}; the source is never modified: pick another --out")
    if dst.exists():
        raise ValueError(f"--out={out} already exists; choose a new directory (nothing is overwritten)")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"the parent of --out={out} does not exist; create it first")
    return src, dst


def write_workdir(src, dst, params, step: int, files: dict[str, dict]) -> pathlib.Path:
    """Write the compressed run into `<dst>.tmp-<pid>`, then rename it to `dst` (nothing half-written)."""
    src, dst = pathlib.Path(src), pathlib.Path(dst)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name in COPIED:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, indent=1) + "\n")
        state = {"params": _as_jax(params), "step": jnp.asarray(step, jnp.int32)}
        with Checkpointer(checkpoint_dir(tmp), save_every=0, async_save=False) as ckpt:
            ckpt.maybe_save(step, state, {"step": step, "compressed_from": str(src)}, force=True)
            ckpt.wait()
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _as_jax(tree):
    if isinstance(tree, dict):
        return {k: _as_jax(v) for k, v in tree.items()}
    return jnp.asarray(np.asarray(tree))


PRUNE_FILE = "pruning.json"


def is_compressed(workdir) -> bool:
    """A workdir written by gpt_jax.compress: its checkpoint holds params only (no optimizer state)."""
    return any((as_path(workdir) / name).is_file() for name in (QUANT_FILE, PRUNE_FILE))


def quant_record(workdir) -> dict | None:
    path = as_path(workdir) / QUANT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def restore_params(workdir, params):
    """The params load_run hands out: a quantized run's stored tree turned into its in-memory form
    (int8 QuantizedTensor / dequantized float32); any other run's params unchanged."""
    record = quant_record(workdir)
    if record is None:
        return params
    return quantize.restore(params, record["matrices"], record["bits"], record.get("act_bits", 0))


def weight_bytes(workdir) -> int:
    """Bytes of the checkpoint's array files on disk (the newest step)."""
    ckpt = checkpoint_dir(workdir)
    steps = sorted((p for p in ckpt.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return sum(f.stat().st_size for f in (steps[-1] / "state").rglob("*") if f.is_file())
