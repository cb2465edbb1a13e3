"""Does a saved checkpoint hold the state tree this config builds? Asked before restoring, so a changed
optimizer or task is a one-line config error, never mistaken for a corrupt checkpoint."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from gpt_jax.paths import as_path


class StateTreeMismatchError(ValueError):
    """The checkpoint's arrays are not the ones the config's train state has (names or shapes)."""


def _name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat(tree) -> dict[tuple[str, ...], tuple]:
    """{path as names: shape} over array leaves; TrainState fields, optax tuples and dicts alike."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not hasattr(leaf, "shape"):
            continue
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # saved as its raw key data
            leaf = jax.eval_shape(jax.random.key_data, leaf)
        out[tuple(_name(k) for k in path)] = tuple(leaf.shape)
    return out


def saved_tree(step_dir: pathlib.Path) -> dict[tuple[str, ...], tuple] | None:
    """The saved state's {path: shape}, or None when its metadata cannot be read (integrity checks decide)."""
    try:
        metadata = ocp.StandardCheckpointHandler().metadata(as_path(step_dir) / "state")
    except Exception:  # noqa: BLE001 - unreadable metadata is the corruption path's business, not ours
        return None
    return _flat(getattr(metadata, "tree", metadata))


def saved_abstract(step_dirs: list[pathlib.Path]) -> Any:
    """The saved state as nested dicts of jax.ShapeDtypeStruct (no sharding), from the newest of
    `step_dirs` whose metadata reads: what a reader restores without rebuilding optimizer or task."""
    for step_dir in step_dirs:
        try:
            metadata = ocp.StandardCheckpointHandler().metadata(as_path(step_dir) / "state")
        except Exception:  # noqa: BLE001 - try the next one; the restore names what is broken
            continue
        tree = getattr(metadata, "tree", metadata)
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree)
    raise FileNotFoundError(f"no checkpoint with readable metadata among {[str(d) for d in step_dirs]}")


def mismatch(abstract_state: Any, step_dir: pathlib.Path) -> str | None:
    """The first difference between `abstract_state` and the checkpoint in `step_dir`, or None."""
    saved = saved_tree(step_dir)
    if saved is None:
        return None
    wanted = _flat(abstract_state)  # an empty `frozen` has no leaves: old checkpoints without it match
    for path in sorted(wanted.keys() | saved.keys()):
        where = "/".join(path)
        if path not in saved:
            return f"this config's state has {where} {wanted[path]}, the checkpoint does not"
        if path not in wanted:
            return f"the checkpoint has {where} {saved[path]}, this config's state does not"
        if wanted[path] != saved[path]:
            return f"{where} is {saved[path]} in the checkpoint but {wanted[path]} in this config's state"
    return None


def check_compatible_newest(abstract_state: Any, step_dirs: list[pathlib.Path]) -> None:
    """check_compatible against the newest of `step_dirs` whose metadata reads (a corrupt newer one is
    the integrity checks' business; the steps of one run share one tree)."""
    for step_dir in step_dirs:
        if saved_tree(step_dir) is not None:
            return check_compatible(abstract_state, step_dir)


def check_compatible(abstract_state: Any, step_dir: pathlib.Path) -> None:
    """Raise StateTreeMismatchError (one line) when the checkpoint cannot be restored into this state."""
    problem = mismatch(abstract_state, step_dir)
    if problem:
        raise StateTreeMismatchError(
            f"checkpoint {step_dir} holds another train state than this config builds ({problem}): the "
            "optimizer, task or PEFT method changed; use a new --workdir, or start a new run from its "
            f"weights with --config.init_from={as_path(step_dir).parent.parent}"
        )
