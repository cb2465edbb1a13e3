"""Adapter files: one .safetensors holding a PEFT method's trainable tree, its config and its base's shapes.

Tensors are stored under their '/'-joined tree path ('h_0/attn/query/kernel/a'); the metadata
(string -> string, as safetensors wants) carries JSON for the method name, the peft config, the
base model's param shapes (`base_shapes(params)`) and the exact tree keys, so any nested dict tree
round-trips (LoRA's keys themselves contain '/'). The file is torch/HF-readable safetensors;
bfloat16 tensors are stored as BF16. The peft config is the nested section (peft.method, peft.<method>);
files that hold the older flat one read as nested (gpt_jax.peft.legacy).

Writes are atomic: the bytes go to a temp file in the same folder, are fsynced, and os.replace
puts them in place, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy
from flax import traverse_util

from gpt_jax.paths import as_path, is_local
from gpt_jax.peft.legacy import migrate_peft

FORMAT = "gpt_jax.peft_adapter/1"
_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip


def base_shapes(params) -> dict[str, list[int]]:
    """{'h_0/attn/query/kernel': [32, 4, 8], ...}: the fingerprint an adapter is checked against on load."""
    return {"/".join(k): [int(d) for d in v.shape] for k, v in traverse_util.flatten_dict(params).items()}


def _flatten(tree) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    flat = traverse_util.flatten_dict(tree) if tree else {}
    tensors, keys = {}, []
    for key, leaf in flat.items():
        name = "/".join(key)
        if name in tensors:
            raise ValueError(f"two tree paths flatten to the same tensor name {name!r}; rename one")
        tensors[name] = np.ascontiguousarray(np.asarray(leaf))
        keys.append(list(key))
    return tensors, keys


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """A (nested) ConfigDict or mapping as plain dicts, for JSON."""
    return {k: _plain(v) if isinstance(v, Mapping) or hasattr(v, "to_dict") else v for k, v in config.items()}


def _write(f, data: bytes) -> None:  # one seam, so a test can simulate a crash mid-write
    f.write(data)


def save_adapter(
    path, method: str, peft_config: Mapping[str, Any], trainable, base_fingerprint: Mapping[str, Any]
) -> int:
    """Write `trainable` (+ metadata) to the .safetensors file `path` atomically; returns its size in bytes."""
    path = os.fspath(path)
    tensors, keys = _flatten(trainable)
    config = _plain(peft_config)
    metadata = {
        "format": FORMAT,
        "method": str(method),
        "peft_config": json.dumps(config, sort_keys=True, default=str),
        "base_shapes": json.dumps({k: list(v) for k, v in base_fingerprint.items()}, sort_keys=True),
        "tree": json.dumps(keys),
    }
    data = safetensors.numpy.save(tensors, metadata=metadata)
    if not is_local(path):  # a bucket: one object write, replaced whole (no temp file + rename there)
        as_path(path).write_bytes(data)
        return len(data)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return len(data)


def read_metadata(path) -> dict[str, Any]:
    """{'method', 'peft_config', 'base_shapes'} of an adapter file, without reading its tensors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file; pass the .safetensors file written by save_adapter")
    try:
        with safetensors.safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
    except Exception as e:  # SafetensorError, truncated header, not safetensors at all
        raise ValueError(
            f"{path} is not a safetensors file ({type(e).__name__}: {e}); pass an adapter written by save_adapter"
        ) from None
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a safetensors file but not a gpt_jax adapter (format={meta.get('format')!r}); pass one written by save_adapter"
        )
    return {
        "method": meta["method"],
        "peft_config": migrate_peft(json.loads(meta["peft_config"])),
        "base_shapes": json.loads(meta["base_shapes"]),
        "tree": json.loads(meta["tree"]),
    }


def check_base(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """ValueError naming the first param of the adapter's base that `expected` lacks or shapes differently.

    Params only `expected` has (e.g. a task head) are allowed: the adapter does not touch them.
    """
    for name in sorted(saved):
        want = tuple(saved[name])
        got = expected.get(name)
        if got is None:
            raise ValueError(
                f"adapter was trained on a base with {name} of shape {want}; this base has no {name}; load it on that base"
            )
        if tuple(got) != want:
            raise ValueError(
                f"adapter was trained on a base with {name} of shape {want}; this base has {tuple(got)}; load it on that base"
            )


def load_adapter(path, expected_base_shapes: Mapping[str, Any] | None = None):
    """(method, peft_config dict, trainable tree of numpy arrays); checks the base's shapes when given."""
    meta = read_metadata(path)
    if expected_base_shapes is not None:
        check_base(meta["base_shapes"], expected_base_shapes)
    with open(os.fspath(path), "rb") as f:
        views = safetensors.deserialize(f.read())
    tensors = {name: np.frombuffer(v["data"], dtype=_DTYPES[v["dtype"]]).reshape(v["shape"]) for name, v in views}
    flat = {}
    for key in meta["tree"]:
        name = "/".join(key)
        if name not in tensors:
            raise ValueError(f"{path} lists tensor {name!r} but does not hold it; the file is damaged, save it again")
        flat[tuple(key)] = tensors[name]
    trainable = traverse_util.unflatten_dict(flat) if flat else {}
    return meta["method"], meta["peft_config"], trainable
