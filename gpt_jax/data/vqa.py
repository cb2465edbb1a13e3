"""Questions and answers about digit images, from templates; step-addressed batches for the VQA task.

Kinds (several phrasings each): "digit" (-> "seven"), "caption" (-> "the digit seven"), "parity" (-> "even" /
"odd"), "arithmetic" ("what is this digit plus three?" -> "ten"; answers are words up to "eighteen") and
"compare" (two images: "which is larger, the first or the second?" -> "the first" / "the second" /
"they are equal"). A row is `<image>` placeholders (one run of P tokens per image), the question, then the
answer and `<eos>`; prefix_len covers the images and the question.
"""

from __future__ import annotations

import zlib

import numpy as np

from gpt_jax.data.tokenizers.word import WordTokenizer

NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
]
KINDS = ("digit", "caption", "parity", "arithmetic", "compare")
IMAGE = "<image>"
TEMPLATES = {
    "digit": ("what digit is this?", "which digit is shown?", "what number is in the image?", "name the digit."),
    "caption": ("describe the image.", "caption this image.", "what does the image show?"),
    "parity": ("is this digit even or odd?", "is the number even or odd?", "odd or even?"),
    "arithmetic": ("what is this digit plus {n}?", "add {n} to the digit.", "what is the number plus {n}?"),
    "compare": (
        "which is larger, the first or the second?",
        "which digit is bigger, the first or the second?",
        "is the first or the second number larger?",
    ),
}
IMAGES_PER_KIND = {k: 2 if k == "compare" else 1 for k in KINDS}


def answer(kind: str, digits: tuple[int, ...], operand: int = 0) -> str:
    d = digits[0]
    if kind == "digit":
        return NUMBERS[d]
    if kind == "caption":
        return f"the digit {NUMBERS[d]}"
    if kind == "parity":
        return "even" if d % 2 == 0 else "odd"
    if kind == "arithmetic":
        return NUMBERS[d + operand]
    if kind == "compare":
        return "they are equal" if digits[0] == digits[1] else ("the first" if digits[0] > digits[1] else "the second")
    raise ValueError(f"unknown question kind {kind!r}; known: {KINDS}")


def question(kind: str, phrasing: int, operand: int = 0) -> str:
    forms = TEMPLATES[kind]
    return forms[phrasing % len(forms)].format(n=NUMBERS[operand])


def render_prompt(question_text: str, num_images: int) -> str:
    """The prompt text: one `<image>` per image, then the question (unless it places its own `<image>`s)."""
    return question_text if IMAGE in question_text else f"{IMAGE} " * num_images + question_text


def expand_image_tokens(ids, image_token_id: int, num_image_tokens: int) -> np.ndarray:
    """Each `<image>` id becomes a run of `num_image_tokens` of them (what the model fills in order)."""
    ids = np.asarray(ids, np.int32)
    return np.repeat(ids, np.where(ids == image_token_id, num_image_tokens, 1)).astype(np.int32)


def encode_prompt(tokenizer, question_text: str, num_images: int, num_image_tokens: int) -> np.ndarray:
    """Expanded prompt ids for `num_images` images; one-line ValueError when the placeholders do not match."""
    ids = tokenizer.encode(render_prompt(question_text, num_images))
    placeholders = int((ids == tokenizer.image_id).sum())
    if placeholders != num_images:
        raise ValueError(
            f"{num_images} image(s) given but the prompt has {placeholders} <image> placeholder(s); "
            "give one image per <image> (or none in the prompt: one is added per image)"
        )
    return expand_image_tokens(ids, tokenizer.image_id, num_image_tokens)


def all_text() -> str:
    """Every word the templates can produce: the word tokenizer's training text."""
    lines = [IMAGE] + [question(k, i, n) for k in KINDS for i in range(len(TEMPLATES[k])) for n in range(10)]
    lines += [
        answer(k, (d, e), n) for k in KINDS for d in range(10) for e in range(10) for n in range(10) if d + n < 19
    ]
    return "\n".join(lines)


def build_tokenizer() -> WordTokenizer:
    return WordTokenizer.from_train_text(all_text())


def augment(images_NxHxW: np.ndarray, rng: np.random.Generator, shift: float, rotate_deg: float) -> np.ndarray:
    """Small random rotations (about the centre) and shifts, bilinear, zeros outside: numpy only."""
    n, h, w = images_NxHxW.shape
    angle = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, n))
    dy, dx = rng.uniform(-shift, shift, (2, n))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    # where each output pixel comes from: the inverse rotation of (output - shift)
    sy = cos * (yy - dy[:, None, None]) - sin * (xx - dx[:, None, None]) + cy
    sx = sin * (yy - dy[:, None, None]) + cos * (xx - dx[:, None, None]) + cx
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    fy, fx = sy - y0, sx - x0
    padded = np.pad(images_NxHxW, ((0, 0), (1, 2), (1, 2)))
    idx = np.arange(n)[:, None, None]

    def at(y, x):
        return padded[idx, np.clip(y + 1, 0, h + 2), np.clip(x + 1, 0, w + 2)]

    out = (
        at(y0, x0) * (1 - fy) * (1 - fx)
        + at(y0, x0 + 1) * (1 - fy) * fx
        + at(y0 + 1, x0) * fy * (1 - fx)
        + at(y0 + 1, x0 + 1) * fy * fx
    )
    return out.astype(np.float32)


class VQARows:
    """Token rows of a fixed length `length` (inputs; targets are inputs shifted by one).

    A row: inputs/targets/weights [L], prefix_len, kind (index into KINDS), images [max_images, H, W, 1],
    digits [2] (the labels, -1 when unused) and the answer length in tokens (with <eos>).
    """

    def __init__(self, tokenizer: WordTokenizer, num_image_tokens: int, max_images: int, length: int | None = None):
        self.tok, self.p, self.n = tokenizer, num_image_tokens, max_images
        if max_images < 2:
            raise ValueError(f"model.max_images={max_images}: the comparison questions need 2 images")
        self._cache: dict[str, np.ndarray] = {}
        self.length = length or self.needed_length()

    def ids(self, text: str) -> np.ndarray:
        if text not in self._cache:
            self._cache[text] = self.tok.encode(text)
        return self._cache[text]

    def needed_length(self) -> int:
        longest = max(len(self.prompt(k, i, 0)) + len(self.ids("they are equal")) + 1 for k in KINDS for i in range(3))
        return longest - 1  # inputs drop the last token

    def prompt(self, kind: str, phrasing: int, operand: int) -> np.ndarray:
        key = f"{kind}|{phrasing}|{operand}"
        if key not in self._cache:
            text = render_prompt(question(kind, phrasing, operand), IMAGES_PER_KIND[kind])
            self._cache[key] = expand_image_tokens(self.ids(text), self.tok.image_id, self.p)
        return self._cache[key]

    def build(self, kinds, phrasings, operands, digits_Rx2, images_RxNxHxW) -> dict[str, np.ndarray]:
        r, length = len(kinds), self.length
        out = {
            "inputs": np.zeros((r, length), np.int32),
            "targets": np.zeros((r, length), np.int32),
            "weights": np.zeros((r, length), np.float32),
            "prefix_len": np.zeros((r,), np.int32),
            "kind": np.asarray([KINDS.index(k) for k in kinds], np.int32),
            "answer_len": np.zeros((r,), np.int32),
            "images": images_RxNxHxW[..., None].astype(np.float32),
            "digits": np.full((r, self.n), -1, np.int32),  # each image's label (-1: no image), for an aux loss
        }
        out["digits"][:, :2] = digits_Rx2
        for i, kind in enumerate(kinds):
            prompt = self.prompt(kind, int(phrasings[i]), int(operands[i]))
            ans = np.append(self.ids(answer(kind, tuple(int(d) for d in digits_Rx2[i]), int(operands[i]))), 2)
            row = np.concatenate([prompt, ans])
            if len(row) - 1 > length:
                raise ValueError(f"a {kind} row needs {len(row) - 1} tokens but task.max_len is {length}; raise it")
            out["inputs"][i, : len(row) - 1] = row[:-1]
            out["targets"][i, : len(row) - 1] = row[1:]
            out["weights"][i, len(prompt) - 1 : len(row) - 1] = 1.0
            out["prefix_len"][i], out["answer_len"][i] = len(prompt), len(ans)
        return out


def kind_mix(weights: dict[str, float]) -> np.ndarray:
    w = np.array([float(weights.get(k, 0.0)) for k in KINDS])
    if w.sum() <= 0 or (w < 0).any():
        raise ValueError(f"vqa.mix={weights} needs non-negative weights with a positive sum over {KINDS}")
    return w / w.sum()


def sample_rows(rows: VQARows, split: dict, batch: int, rng: np.random.Generator, mix: np.ndarray, aug: dict):
    """One random global batch from a split's images (with replacement), augmented if aug['shift'/'rotate']."""
    images, labels = split["images"], split["labels"]
    kinds = [KINDS[i] for i in rng.choice(len(KINDS), size=batch, p=mix)]
    phrasings = rng.integers(0, 12, batch)
    pick_Rx2 = rng.integers(0, len(labels), (batch, 2))
    operands = rng.integers(0, 10, batch)
    digits_Rx2 = labels[pick_Rx2]
    chosen = images[pick_Rx2]  # [R, 2, H, W]
    if aug.get("shift") or aug.get("rotate"):
        flat = augment(chosen.reshape(-1, *chosen.shape[2:]), rng, aug.get("shift", 0), aug.get("rotate", 0))
        chosen = flat.reshape(chosen.shape)
    two = np.array([IMAGES_PER_KIND[k] == 2 for k in kinds])
    chosen[~two, 1] = 0.0  # single-image rows: the second slot is blank and no placeholder reads it
    digits_Rx2[~two, 1] = -1
    full = np.zeros((batch, rows.n, *images.shape[1:]), np.float32)
    full[:, :2] = chosen
    return rows.build(kinds, phrasings, operands, digits_Rx2, full)


def step_batches(rows, split, batch, seed, step, k, mix, aug, process_index=0, process_count=1):
    """This process's rows of the batches of steps [step, step + k): a pure function of the step."""
    per = []
    for s in range(step, step + k):
        rng = np.random.default_rng([seed, zlib.crc32(b"vqa"), s])
        per.append(sample_rows(rows, split, batch, rng, mix, aug))
    b_local = batch // process_count
    sl = slice(process_index * b_local, (process_index + 1) * b_local)
    return {key: np.stack([p[key][sl] for p in per]) for key in per[0]}


def eval_rows(rows: VQARows, split: dict) -> dict[str, np.ndarray]:
    """The fixed held-out set: every kind once per held-out image (phrasings cycled, operands and the second
    image of each comparison drawn with a fixed seed from the held-out images only)."""
    images, labels = split["images"], split["labels"]
    n = len(labels)
    rng = np.random.default_rng(zlib.crc32(b"vqa-eval"))
    partner = rng.permutation(n)
    operands = rng.integers(0, 10, n)
    out = []
    for kind in KINDS:
        second = partner if kind == "compare" else np.full(n, -1)
        digits_Rx2 = np.stack([labels, np.where(second >= 0, labels[np.maximum(second, 0)], -1)], 1)
        full = np.zeros((n, rows.n, *images.shape[1:]), np.float32)
        full[:, 0] = images
        if kind == "compare":
            full[:, 1] = images[partner]
        out.append(rows.build([kind] * n, np.arange(n), operands, digits_Rx2, full))
    return {key: np.concatenate([o[key] for o in out]) for key in out[0]}


def chance(data: dict[str, np.ndarray]) -> dict[str, float]:
    """Per kind, the exact-match accuracy of the best model that sees no image: the most frequent answer
    for each question text (what a text-only model can at best learn from the question)."""
    out = {}
    for i, kind in enumerate(KINDS):
        sel = data["kind"] == i
        if not sel.any():
            continue
        keys = [
            tuple(row[w > 0]) + tuple(q[:p])
            for row, w, q, p in zip(
                data["targets"][sel], data["weights"][sel], data["inputs"][sel], data["prefix_len"][sel], strict=True
            )
        ]
        questions, best = {}, 0
        for key, q_len in zip(keys, data["prefix_len"][sel], strict=True):
            q, a = key[-q_len:], key[:-q_len]
            questions.setdefault(q, {}).setdefault(a, 0)
            questions[q][a] += 1
        best = sum(max(answers.values()) for answers in questions.values())
        out[kind] = best / int(sel.sum())
    return out
