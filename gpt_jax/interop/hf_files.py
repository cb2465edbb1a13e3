"""Reading a local Hugging Face folder: its JSON files and its weights (safetensors, or PyTorch
pickles when torch is installed), single-file or sharded. Nothing is downloaded."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so bf16 checkpoints read too)
import numpy as np
from safetensors import safe_open

# Non-weight buffers that older GPT-2 checkpoints carry (the causal mask), skipped on import.
_BUFFERS = (".attn.bias", ".attn.masked_bias")


class HFError(ValueError):
    """A one-line problem with an HF folder or a workdir (names the file and the fix)."""


def read_json(path: pathlib.Path) -> dict[str, Any]:
    if not path.is_file():
        raise HFError(f"{path} not found; expected an HF GPT-2 folder (config.json + model.safetensors)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFError(f"{path} is not valid JSON ({e}); the file is truncated or corrupt") from None
    if not isinstance(data, dict):
        raise HFError(f"{path} is not a JSON object")
    return data


def _weight_files(hf_dir: pathlib.Path) -> tuple[str, list[pathlib.Path]]:
    """('safetensors' | 'torch', files) of an HF folder, sharded (*.index.json) or not."""
    for kind, single, index in (
        ("safetensors", "model.safetensors", "model.safetensors.index.json"),
        ("torch", "pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (hf_dir / single).is_file():
            return kind, [hf_dir / single]
        if (hf_dir / index).is_file():
            weight_map = read_json(hf_dir / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise HFError(f"{hf_dir / index} has no weight_map; the index file is corrupt")
            files = [hf_dir / name for name in sorted(set(weight_map.values()))]
            for f in files:
                if not f.is_file():
                    raise HFError(f"{f} not found, but {index} lists it; copy every shard of the model")
            return kind, files
    raise HFError(f"{hf_dir} has no model.safetensors or pytorch_model.bin; save the model with save_pretrained")


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys() if not k.endswith(_BUFFERS)}  # noqa: SIM118 - a safetensors handle, not a dict
    except Exception as e:  # SafetensorError, OSError
        raise HFError(
            f"{path}: cannot read safetensors ({e}); the file is truncated or corrupt, copy it again"
        ) from None


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch  # here, not at the top: optional (only pytorch_model.bin files need it)
    except ImportError:
        raise HFError(
            f'{path} is a PyTorch pickle and reading it needs torch (pip install -e ".[hf]"), '
            "or save the model as model.safetensors"
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip/pickle/unpickler errors of a bad file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HFError(f"{path}: cannot read PyTorch weights ({msg}); the file is truncated or corrupt") from None
    if not isinstance(state, dict):
        raise HFError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {
        k: v.detach().to(torch.float32).numpy()
        for k, v in state.items()
        if not k.endswith(_BUFFERS) and getattr(v, "is_floating_point", lambda: False)()
    }


def read_hf_weights(hf_dir: str | pathlib.Path) -> tuple[dict[str, np.ndarray], str]:
    """({name: array} without the 'transformer.' prefix or mask buffers, a description for errors)."""
    hf_dir = pathlib.Path(hf_dir)
    kind, files = _weight_files(hf_dir)
    read = _read_safetensors if kind == "safetensors" else _read_torch
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(read(f))
    where = str(files[0]) if len(files) == 1 else f"{hf_dir} ({len(files)} {kind} shards)"
    return {k.removeprefix("transformer."): v for k, v in tensors.items()}, where
