"""Instruction / dialogue SFT data: JSONL rows -> conversations -> (ids, loss mask) -> [N, L] batches.

  convs = load_sft("alpaca_en_demo")                       # {'train': [...], 'validation': [...]}
  examples = [render(template, tok, system, turns) for system, turns in convs["train"]]
  batch = pack(examples, L)                                # or unpacked(examples, L)

A conversation is `(system, [(user, assistant), ...])`. Row formats (one JSON object per line):
  - Alpaca     {instruction, input, output[, system, history]}: user = instruction, + "\\n\\n" + input
               when input is non-empty; `history` = earlier [user, assistant] pairs (LLaMA-Factory).
  - seed tasks {instruction, instances: [{input, output}, ...]}: one conversation per instance.
  - ShareGPT   {conversations: [{from, value}, ...][, system, tools]}: from = human/gpt/system, and
               LLaMA-Factory's function_call (an assistant turn) / observation (a user turn).
  - messages   {messages: [{role, content}, ...]}: role = system/user/assistant (OpenAI style).

Rendering follows gpt_jax.chat_template.ChatTemplate, so a model fine-tuned here is prompted by the chat CLI
with exactly the text it was trained on. Only assistant replies (and the template's end marker
after each) carry loss.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import gpt_jax.data.sources as sources
from gpt_jax.chat_template import ChatTemplate
from gpt_jax.data.tokenizers import Tokenizer

log = logging.getLogger(__name__)

Conversation = tuple[str, list[tuple[str, str]]]  # (system, [(user, assistant), ...])
Example = tuple[np.ndarray, np.ndarray]  # (ids int32[T], loss_mask float32[T])

# Known names -> file under the manual dir (shared/data).
SFT_FILES = {
    "alpaca_seed_tasks": "alpaca_seed_tasks/seed_tasks.jsonl",
    "alpaca_en_demo": "llamafactory_sft_demos/alpaca_en_demo.jsonl",
    "alpaca_zh_demo": "llamafactory_sft_demos/alpaca_zh_demo.jsonl",
    "glaive_toolcall_en_demo": "llamafactory_sft_demos/glaive_toolcall_en_demo.jsonl",
}

_USER_ROLES = {"human": "user", "user": "user", "observation": "user"}
_ASSISTANT_ROLES = {"gpt": "assistant", "assistant": "assistant", "function_call": "assistant"}
_EXPECTED = (
    "expected Alpaca {instruction, input, output}, seed-task {instruction, instances}, "
    "ShareGPT {conversations: [{from, value}]} or {messages: [{role, content}]}"
)


# --- reading ------------------------------------------------------------------------------------


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line; a malformed line is an error naming path:line."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{line_no}: invalid JSON ({e.msg} at column {e.colno}); fix or remove that line."
                ) from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object per line, got {type(row).__name__}.")
            yield line_no, row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a .jsonl file, blank lines skipped."""
    return [row for _, row in iter_jsonl(path)]


# --- rows -> conversations ----------------------------------------------------------------------


def _where(where: str | None) -> str:
    return f"{where}: " if where else ""


def _alpaca_user(instruction: str, input_: str) -> str:
    return f"{instruction}\n\n{input_}" if input_ else instruction


def _message_turns(
    messages: list, role_key: str, text_key: str, where: str | None
) -> tuple[str, list[tuple[str, str]]]:
    """Alternating user/assistant messages (system first, if any) -> (system, turns)."""
    system, turns, pending = "", [], None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or role_key not in msg or text_key not in msg:
            raise ValueError(f"{_where(where)}message {i} must be an object with {role_key!r} and {text_key!r}.")
        role, text = msg[role_key], msg[text_key]
        if role == "system" and i == 0:
            system = text
        elif _USER_ROLES.get(role) == "user" and pending is None:
            pending = text
        elif _ASSISTANT_ROLES.get(role) == "assistant" and pending is not None:
            turns.append((pending, text))
            pending = None
        else:
            known = sorted(set(_USER_ROLES) | set(_ASSISTANT_ROLES) | {"system"})
            raise ValueError(
                f"{_where(where)}message {i} has {role_key}={role!r} out of turn; messages must alternate "
                f"user/assistant starting with a user turn (system only first); roles known: {known}."
            )
    if pending is not None:
        raise ValueError(f"{_where(where)}the last user message has no assistant reply; drop it or add the reply.")
    if not turns:
        raise ValueError(f"{_where(where)}no (user, assistant) turn in the conversation.")
    return system, turns


def conversations(row: dict[str, Any], where: str | None = None) -> list[Conversation]:
    """Every conversation in one JSONL row (seed tasks give one per instance; others give one).

    `where` (e.g. 'path:12') prefixes errors."""
    if not isinstance(row, dict):
        raise ValueError(f"{_where(where)}a row must be a JSON object; {_EXPECTED}.")
    system = row.get("system") or ""
    if "conversations" in row:  # ShareGPT
        conv_system, turns = _message_turns(row["conversations"], "from", "value", where)
        system = conv_system or system
        tools = row.get("tools")
        if isinstance(tools, (list, dict)):
            tools = json.dumps(tools, ensure_ascii=False)
        if tools and tools.strip() != "[]":  # as LLaMA-Factory: tool descriptions go in the system prompt
            system = f"{system}\n\nTools: {tools}" if system else f"Tools: {tools}"
        return [(system, turns)]
    if "messages" in row:
        conv_system, turns = _message_turns(row["messages"], "role", "content", where)
        return [(conv_system or system, turns)]
    if "instruction" in row and "instances" in row:  # self-instruct seed task
        instances = row["instances"]
        if not isinstance(instances, list) or not instances:
            raise ValueError(f"{_where(where)}'instances' must be a non-empty list of {{input, output}}.")
        out = []
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or "output" not in inst:
                raise ValueError(f"{_where(where)}instance {i} must be an object with 'input' and 'output'.")
            out.append((system, [(_alpaca_user(row["instruction"], inst.get("input") or ""), inst["output"])]))
        return out
    if "instruction" in row and "output" in row:  # Alpaca
        history = [(str(u), str(a)) for u, a in row.get("history") or []]
        return [(system, history + [(_alpaca_user(row["instruction"], row.get("input") or ""), row["output"])])]
    raise ValueError(f"{_where(where)}row has keys {sorted(row)}; {_EXPECTED}.")


def to_conversation(row: dict[str, Any], where: str | None = None) -> Conversation:
    """The one conversation of a row; a seed task with several instances needs `conversations`."""
    convs = conversations(row, where)
    if len(convs) != 1:
        raise ValueError(
            f"{_where(where)}row holds {len(convs)} conversations (seed-task instances); use conversations(row)."
        )
    return convs[0]


# --- conversation -> (ids, loss mask) -----------------------------------------------------------


def render_segments(template: ChatTemplate, system: str, turns: Sequence[tuple[str, str]]) -> list[tuple[str, bool]]:
    """(text, trained?) pieces whose concatenation is the full rendered conversation: everything
    ChatTemplate.render writes for these turns as history; trained = an assistant reply + end."""
    segments: list[tuple[str, bool]] = []
    prompt = template.system.format(system=system) if system else ""
    for user, reply in turns:
        prompt += template.user.format(text=user) + template.assistant
        segments += [(prompt, False), (reply + template.end, True)]
        prompt = ""
    return segments


def render(template: ChatTemplate, tokenizer: Tokenizer, system: str, turns: Sequence[tuple[str, str]]) -> Example:
    """(ids int32[T], loss_mask float32[T]): 1 on the tokens of assistant replies and their end marker.

    Tokenised segment by segment, so no token straddles a mask boundary (for BPE the ids may differ
    from tokenising the whole text at once; they still decode to the same text)."""
    ids, mask = [], []
    for text, trained in render_segments(template, system, turns):
        seg = np.asarray(tokenizer.encode(text), dtype=np.int32)
        ids.append(seg)
        mask.append(np.full(seg.shape, float(trained), dtype=np.float32))
    return np.concatenate(ids), np.concatenate(mask)


def render_all(template: ChatTemplate, tokenizer: Tokenizer, convs: Sequence[Conversation]) -> list[Example]:
    return [render(template, tokenizer, system, turns) for system, turns in convs]


# --- examples -> [N, L] batches for a causal LM -------------------------------------------------


def truncate(examples: Sequence[Example], length: int) -> list[Example]:
    """Examples cut to their first length + 1 tokens (a row of L inputs holds L + 1 tokens of one
    example, shifted); counts and logs how many were cut and how many lost every trained token."""
    if length < 1:
        raise ValueError(f"length={length} must be >= 1.")
    out, cut, empty = [], 0, 0
    for ids, mask in examples:
        if len(ids) != len(mask):
            raise ValueError(f"an example has {len(ids)} ids but {len(mask)} mask values; use render().")
        if len(ids) > length + 1:
            cut += 1
            ids, mask = ids[: length + 1], mask[: length + 1]
            empty += int(not mask[1:].any())
        out.append((ids, mask))
    if cut:
        log.warning(
            "%d of %d SFT examples are longer than %d tokens and were truncated (%d of them kept no "
            "trained token); raise the sequence length (task.max_len / model.block_size) to keep them whole.",
            cut,
            len(out),
            length + 1,
            empty,
        )
    return out


def _trainable(examples: Sequence[Example], length: int) -> list[Example]:
    # One token predicts nothing: such an example would only take a row slot.
    kept = [ex for ex in truncate(examples, length) if len(ex[0]) >= 2]
    if len(kept) < len(examples):
        log.warning("dropped %d SFT examples of fewer than 2 tokens.", len(examples) - len(kept))
    return kept


def first_fit(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Greedy first-fit, in the given order: each item goes into the first row with room, else a
    new row. Returns the item indices of each row."""
    rows: list[list[int]] = []
    room = np.zeros(0, dtype=np.int64)
    for i, size in enumerate(sizes):
        if size > capacity:
            raise ValueError(f"item {i} of size {size} exceeds the row capacity {capacity}; truncate first.")
        fits = np.flatnonzero(room >= size)
        if fits.size:
            r = int(fits[0])
            rows[r].append(i)
            room[r] -= size
        else:
            rows.append([i])
            room = np.append(room, capacity - size)
    return rows


def _empty(n: int, length: int) -> dict[str, np.ndarray]:
    return {
        "inputs": np.zeros((n, length), np.int32),
        "targets": np.zeros((n, length), np.int32),
        "weights": np.zeros((n, length), np.float32),
        "segment_ids": np.zeros((n, length), np.int32),
        "positions": np.zeros((n, length), np.int32),
    }


def _fill(batch: dict[str, np.ndarray], rows: list[list[int]], examples: list[Example]) -> dict[str, np.ndarray]:
    # An example of T tokens takes T - 1 slots: inputs ids[:-1], targets ids[1:], so no target ever
    # belongs to another example; padding slots keep segment 0 and weight 0.
    for r, members in enumerate(rows):
        start = 0
        for segment, i in enumerate(members, start=1):
            ids, mask = examples[i]
            n = len(ids) - 1
            sl = slice(start, start + n)
            batch["inputs"][r, sl] = ids[:-1]
            batch["targets"][r, sl] = ids[1:]
            batch["weights"][r, sl] = mask[1:]
            batch["segment_ids"][r, sl] = segment
            batch["positions"][r, sl] = np.arange(n)
            start += n
    return batch


def pack(examples: Sequence[Example], length: int) -> dict[str, np.ndarray]:
    """Several whole examples per row of `length` (greedy first-fit, in the given order; shuffle
    before packing). Fields int32/float32 [N, length]: inputs, targets, weights (loss mask of the
    target token), segment_ids (1..k per row, 0 = padding), positions (restart at 0 per example).
    An example of T <= length + 1 tokens takes T - 1 slots (inputs ids[:-1], targets ids[1:]), so
    no target ever crosses into the next example; padding has weight 0.

    With gpt_jax.masks.attention_mask(batch) and these positions each example sees only itself, so
    its loss is what it would be alone in a row (`unpacked`)."""
    examples = _trainable(examples, length)
    rows = first_fit([len(ids) - 1 for ids, _ in examples], length)
    return _fill(_empty(len(rows), length), rows, examples)


def unpacked(examples: Sequence[Example], length: int) -> dict[str, np.ndarray]:
    """One example per row, right-padded; the same fields as `pack`."""
    examples = _trainable(examples, length)
    return _fill(_empty(len(examples), length), [[i] for i in range(len(examples))], examples)


# --- named files and splits ---------------------------------------------------------------------


def resolve_sft_path(path_or_name: str | os.PathLike, manual_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """A known name (SFT_FILES, under the manual dir) or a path to a .jsonl file."""
    name = str(path_or_name)
    if name in SFT_FILES:
        return sources.require_manual_files(name, [SFT_FILES[name]], manual_dir) / SFT_FILES[name]
    path = pathlib.Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"SFT data {name!r} is neither a known name ({', '.join(sorted(SFT_FILES))}) nor a file; "
            "set config.task.dataset to one of them or to a .jsonl path."
        )
    return path


def load_sft(
    path_or_name: str | os.PathLike,
    *,
    manual_dir: str | os.PathLike | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    dedupe: bool = True,
) -> dict[str, list[Conversation]]:
    """{'train': [...], 'validation': [...]} conversations from a JSONL file or a known name.

    Split by ROW (a seed task's instances stay together): a `seed` permutation of the rows, the
    last ceil(validation_fraction * rows) of it are validation; each split keeps file order.
    `dedupe` first drops rows repeating an earlier row's conversations (alpaca_en_demo has 14,
    alpaca_zh_demo 8, glaive_toolcall_en_demo 35): a copy on each side of the split would leak
    train into validation."""
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction} must be in [0, 1).")
    path = resolve_sft_path(path_or_name, manual_dir)
    rows = [conversations(row, f"{path}:{line}") for line, row in iter_jsonl(path)]
    if not rows:
        raise ValueError(f"{path} holds no rows.")
    if dedupe:
        seen: set[str] = set()
        unique = []
        for convs in rows:  # keep the first copy, in file order
            key = json.dumps(convs, ensure_ascii=False)
            if key not in seen:
                seen.add(key)
                unique.append(convs)
        if len(unique) < len(rows):
            log.info("%s: dropped %d duplicate rows of %d.", path, len(rows) - len(unique), len(rows))
        rows = unique
    n_val = math.ceil(validation_fraction * len(rows)) if len(rows) > 1 else 0
    is_val = np.zeros(len(rows), dtype=bool)
    is_val[np.random.default_rng(seed).permutation(len(rows))[len(rows) - n_val :]] = True
    return {
        "train": [c for row, v in zip(rows, is_val) if not v for c in row],
        "validation": [c for row, v in zip(rows, is_val) if v for c in row],
    }
