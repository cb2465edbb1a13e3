"""Run configs: load a `get_config()` file, apply `--config.a.b=value` overrides, guard the workdir."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import difflib
import importlib.util
import json
import os
import pathlib
import socket
import sys

import ml_collections

from gpt_jax import config_checks
from gpt_jax.config import ModelConfig
from gpt_jax.paths import is_local
from gpt_jax.peft.legacy import migrate_config


def add_config_root(path: str) -> None:
    """Put the folder holding a config file's `configs` package on sys.path, so its
    `from configs.finetune.sst2 import ...` works from any working directory."""
    parents = pathlib.Path(path).resolve().parents
    root = str(next((d.parent for d in parents if d.name == "configs"), parents[1]))
    if root not in sys.path:
        sys.path.insert(0, root)


def task_name(config) -> str:
    """The run's task (config.task.name); a config without a task section is a language-model run."""
    return (config.get("task") or {}).get("name", "lm")


def load_config(path: str) -> ml_collections.ConfigDict:
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path!r} not found; pass --config=configs/<name>.py")
    add_config_root(path)
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
    if "jax" in sys.modules and _backends_started():
        import jax

        if jax.default_backend() == "cpu" and jax.device_count() != n:
            raise ValueError(
                f"config.mesh.cpu_devices={n} but jax already started with {jax.device_count()} "
                f"CPU devices; set XLA_FLAGS={flag} before importing jax, or cpu_devices=0"
            )
        return
    os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()


def _backends_started() -> bool:
    """Whether XLA has started (it reads XLA_FLAGS then); importing jax alone does not start it."""
    from jax._src import xla_bridge  # private, but the only non-starting probe jax 0.10 has

    return xla_bridge.backends_are_initialized()


def apply_compile_cache(config: ml_collections.ConfigDict) -> None:
    """Turn on JAX's persistent compilation cache at `config.train.compile_cache_dir` ("" = off), so a
    second run of the same shapes loads its executables instead of recompiling (seconds on CPU, minutes
    on TPU). JAX decides once, at its first compile, whether the cache is used: call this before that."""
    import jax

    path = config.train.get("compile_cache_dir")
    if not path:
        jax.config.update("jax_compilation_cache_dir", None)  # off, even if JAX_COMPILATION_CACHE_DIR set it
        return

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # small steps add up
    jax.config.update("jax_compilation_cache_max_size", 2 * 1024**3)  # LRU-evicted beyond 2 GiB


def check_model(workdir: pathlib.Path, model_fields: dict) -> None:
    """Refuse a workdir whose saved model differs from the requested one (nothing is written).

    A field the saved file lacks (written before the field existed) counts as its ModelConfig
    default, so adding a field with a behaviour-preserving default keeps old workdirs resumable; a
    saved key that is no longer a field (the PEFT sizes older files hold) is not compared.
    """
    saved = workdir / "model_config.json"
    if not saved.exists():
        return
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    before = {**{k: defaults.get(k) for k in model_fields}, **migrate_config(json.loads(saved.read_text()))}
    diff = {k: (before.get(k), v) for k, v in model_fields.items() if before.get(k) != v}
    if diff:
        ((key, (old, new)),) = list(diff.items())[:1]
        raise ValueError(
            f"workdir {workdir} holds a run with model.{key}={old!r} but the config asks for "
            f"{new!r} ({len(diff)} field(s) differ); use a new --workdir or match the saved "
            f"config in {saved}"
        )


def check_resume(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> dict:
    """{key: (saved, new)} of what this config changes in the run saved in `workdir` (nothing is written).

    A change to the training trajectory (seed, data, batch, objective, optimizer, schedule, task, PEFT)
    is refused unless `train.allow_changes`; cadence, mesh, paths and reporting may change freely.
    """
    saved_file = workdir / "config.json"
    if not saved_file.exists():
        return {}
    try:
        saved = config_checks.flatten(migrate_config(json.loads(saved_file.read_text())))
    except json.JSONDecodeError as e:
        raise ValueError(f"{saved_file} is not valid JSON ({e}); restore it or use a new --workdir") from None
    changes = config_checks.trajectory_changes(saved, config_checks.flatten(config))
    if changes and not config.train.get("allow_changes"):
        key, (old, new) = next(iter(changes.items()))
        raise ValueError(
            f"workdir {workdir} holds a run with {key}={old!r} but the config asks for {new!r} "
            f"({len(changes)} trajectory setting(s) differ: {', '.join(changes)}); use a new --workdir, "
            f"match {saved_file}, or pass --config.train.allow_changes=True to resume with the change "
            f"(recorded in {workdir / HISTORY_FILE})"
        )
    return changes


HISTORY_FILE = "run_history.jsonl"


def check_writable(workdir: pathlib.Path) -> None:
    """Fail before training, not at the first checkpoint, when the workdir cannot be written. A workdir
    that does not exist yet is not created here: its nearest existing parent is probed instead."""
    existing = workdir
    while is_local(existing) and not existing.exists() and existing != existing.parent:  # a bucket has no dirs
        existing = existing.parent
    try:
        probe = existing / f".write_probe.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"workdir {workdir} is not writable ({e.strerror}); choose another --workdir or fix its permissions"
        ) from None


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file (an object store
    replaces an object whole: one write there)."""
    if not is_local(path):
        path.write_text(text)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_run(
    workdir: pathlib.Path,
    config: ml_collections.ConfigDict,
    model_fields: dict,
    *,
    step: int | None = None,
    changes: dict | None = None,
) -> None:
    """Write model_config.json and config.json; with `step`, append this start to run_history.jsonl."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomic(workdir / "model_config.json", json.dumps(model_fields, indent=2, sort_keys=True))
    write_atomic(workdir / "config.json", config.to_json_best_effort(indent=2, sort_keys=True))
    if step is None:
        return
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "event": "resume" if step else "start",
        "step": step,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "changes": {k: list(v) for k, v in (changes or {}).items()},
    }
    line, history = json.dumps(record, default=str) + "\n", workdir / HISTORY_FILE
    if not is_local(history):  # object stores cannot append: rewrite the (short) file
        history.write_text((history.read_text() if history.exists() else "") + line)
        return
    with open(history, "a") as f:
        f.write(line)


def check_and_save(
    workdir: pathlib.Path, config: ml_collections.ConfigDict, model_fields: dict, *, save: bool = True
) -> None:
    """check_model, then (with `save`) write the run's config files."""
    check_model(workdir, model_fields)
    if save:
        save_run(workdir, config, model_fields)
