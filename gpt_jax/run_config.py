"""Run configs: load a `get_config()` file, apply `--config.a.b=value` overrides, guard the workdir."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import os
import pathlib
import sys
from typing import Sequence

import ml_collections


def load_config(path: str) -> ml_collections.ConfigDict:
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path!r} not found; pass --config=configs/<name>.py")
    # The folder holding the `configs` package, so `from configs.base import ...` works from anywhere
    # (configs/x.py and configs/finetune/x.py alike).
    parents = file.resolve().parents
    root = str(next((d.parent for d in parents if d.name == "configs"), parents[1]))
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_gpt_jax_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config() function")
    return module.get_config()


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # bare strings: --config.model.pos=rope


def set_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """config.<dotted> = text parsed as a Python literal; unknown keys are an error."""
    *parents, leaf = dotted.split(".")
    node, walked = config, []
    for name in parents + [leaf]:
        keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        if name not in keys:
            where = ".".join(walked) or "config"
            close = difflib.get_close_matches(name, keys, n=1)
            hint = f"; did you mean {'.'.join(walked + close)!r}?" if close else f"; {where} has keys {sorted(keys)}"
            raise ValueError(f"unknown config key {dotted!r}{hint}")
        walked.append(name)
        if name != leaf:
            node = node[name]
    value = _parse_value(text)
    try:
        node[leaf] = value
    except TypeError as e:
        raise ValueError(f"--config.{dotted}={text}: {e}".replace("\n", " ")) from None


def parse_args(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, dict[str, str]]:
    """`--config=FILE`, `--config.a.b=v` overrides, and other `--name=value` flags returned as a dict."""
    config, overrides, flags = None, [], {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"cannot parse argument {arg!r}; use --name=value")
        name, value = arg[2:].split("=", 1)
        if name == "config":
            config = load_config(value)
        elif name.startswith("config."):
            overrides.append((name[len("config.") :], value))
        else:
            flags[name] = value
    if config is None:
        raise ValueError("no --config given; e.g. --config=configs/shakespeare_char_cpu.py")
    for dotted, value in overrides:
        set_override(config, dotted, value)
    return config, flags


def apply_cpu_devices(config: ml_collections.ConfigDict) -> None:
    """`config.mesh.cpu_devices=N` splits the host CPU into N XLA devices (data-parallel over cores).

    XLA reads the flag once, when jax starts, so this must run before jax is imported.
    """
    n = int(config.mesh.get("cpu_devices", 0) or 0)
    if n <= 0:
        return
    flag = f"--xla_force_host_platform_device_count={n}"
    current = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in current:
        return  # the caller chose already (e.g. tests simulating 8 devices)
    if "jax" in sys.modules:
        import jax

        if jax.default_backend() == "cpu" and jax.device_count() != n:
            raise ValueError(
                f"config.mesh.cpu_devices={n} but jax already started with {jax.device_count()} "
                f"CPU devices; set XLA_FLAGS={flag} before importing jax, or cpu_devices=0"
            )
        return
    os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()


def apply_compile_cache(config: ml_collections.ConfigDict) -> None:
    """Turn on JAX's persistent compilation cache at `config.train.compile_cache_dir` ("" = off), so a
    second run of the same shapes loads its executables instead of recompiling (seconds on CPU, minutes
    on TPU). JAX decides once, at its first compile, whether the cache is used: call this before that."""
    path = config.train.get("compile_cache_dir")
    if not path:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # small steps add up
    jax.config.update("jax_compilation_cache_max_size", 2 * 1024**3)  # LRU-evicted beyond 2 GiB


def check_and_save(
    workdir: pathlib.Path, config: ml_collections.ConfigDict, model_fields: dict, *, save: bool = True
) -> None:
    """Refuse to resume a workdir whose saved model differs from the requested one; save the config.

    A field the saved file lacks (written before the field existed) counts as its ModelConfig
    default, so adding a field with a behaviour-preserving default keeps old workdirs resumable.
    """
    saved = workdir / "model_config.json"
    if saved.exists():
        from gpt_jax.config import ModelConfig  # here: this module is imported before jax starts

        defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
        before = {**{k: defaults.get(k) for k in model_fields}, **json.loads(saved.read_text())}
        diff = {k: (before.get(k), v) for k, v in model_fields.items() if before.get(k) != v}
        if diff:
            ((key, (old, new)),) = list(diff.items())[:1]
            raise ValueError(
                f"workdir {workdir} holds a run with model.{key}={old!r} but the config asks for "
                f"{new!r} ({len(diff)} field(s) differ); use a new --workdir or match the saved "
                f"config in {saved}"
            )
    if not save:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(model_fields, indent=2, sort_keys=True))
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
