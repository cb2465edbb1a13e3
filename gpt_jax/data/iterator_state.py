"""A data stream's position saved in each checkpoint beside the train state, through grain's Orbax handler.

A task with a sequential stream exposes it as `task.data_iterator` (get_state() -> bytes, set_state(bytes));
step-addressed tasks have none and their checkpoints carry no data item. The item is named DATA_ITEM;
grain writes one `process_<i>-of-<n>.json` per process, so every host resumes its own slice.
"""

from __future__ import annotations

from typing import Any

DATA_ITEM = "data"


class StateBox:
    """What grain's CheckpointHandler saves and restores: a position copied when the save starts (an
    async save writes it later, after training has moved the live stream on)."""

    def __init__(self, state: bytes = b""):
        self.state = state

    def get_state(self) -> bytes:
        return self.state

    def set_state(self, state: bytes) -> None:
        self.state = state

    def start_prefetch(self) -> None:  # grain's handler calls it after set_state
        pass


def stream_of(task) -> Any:
    return getattr(task, "data_iterator", None)


def save_items(task) -> dict[str, Any]:
    """Extra Composite items for a save: the stream's position now (none for step-addressed tasks)."""
    stream = stream_of(task)
    if stream is None:
        return {}
    import grain  # lazy: only a run on the grain pipeline needs grain

    return {DATA_ITEM: grain.checkpoint.CheckpointSave(StateBox(stream.get_state()))}


def restore_items(task) -> tuple[dict[str, Any], StateBox | None]:
    """(extra Composite items for a restore, the box they fill); call `apply` with the box afterwards."""
    if stream_of(task) is None:
        return {}, None
    import grain  # lazy: only a run on the grain pipeline needs grain

    box = StateBox()
    return {DATA_ITEM: grain.checkpoint.CheckpointRestore(box)}, box


def check_saved(step_dir, items: dict) -> None:
    """A checkpoint without the data item (saved by a run on another pipeline) is a config error, refused
    before restoring, never taken for corruption."""
    missing = [name for name in items if not (step_dir / name).is_dir()]
    if missing:
        raise ValueError(
            f"checkpoint {step_dir} has no {', '.join(missing)} item (saved by a run on another data pipeline); "
            "resume it with the data.pipeline it was trained on"
        )


def apply(task, box: StateBox | None) -> None:
    """Move the task's stream to the restored position."""
    if box is not None:
        stream_of(task).set_state(box.state)
