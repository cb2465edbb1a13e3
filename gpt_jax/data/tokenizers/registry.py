"""Tokenizer kinds by name: a new kind is one module with a class that has `from_train_text` /
`from_json` (and `from_pretrained` if it loads files), plus one line in `TOKENIZERS`."""

from __future__ import annotations

import os

from gpt_jax.data.tokenizers.base import TOKENIZER_FILE, Tokenizer, TokenizerClass, _read_json_file
from gpt_jax.data.tokenizers.bpe import BPETokenizer
from gpt_jax.data.tokenizers.byte import ByteTokenizer
from gpt_jax.data.tokenizers.char import CharTokenizer
from gpt_jax.data.tokenizers.sentencepiece import SentencePieceTokenizer
from gpt_jax.data.tokenizers.word import WordTokenizer
from gpt_jax.paths import as_path

# kind -> class.
TOKENIZERS: dict[str, TokenizerClass] = {
    CharTokenizer.name: CharTokenizer,
    ByteTokenizer.name: ByteTokenizer,
    BPETokenizer.name: BPETokenizer,
    SentencePieceTokenizer.name: SentencePieceTokenizer,
    WordTokenizer.name: WordTokenizer,
}


def _lookup(kind: str) -> TokenizerClass:
    if kind not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer kind {kind!r}; known kinds: {', '.join(sorted(TOKENIZERS))}.")
    return TOKENIZERS[kind]


def build_tokenizer(
    kind: str, train_text: str, *, vocab_size: int | None = None, path: str | os.PathLike | None = None
) -> Tokenizer:
    """A tokenizer of `kind`: loaded from `path` (data.tokenizer_path) if given, else fitted (if it
    learns anything) on the train split only, with `vocab_size` ids (data.vocab_size)."""
    cls = _lookup(kind)
    if path:
        if not hasattr(cls, "from_pretrained"):
            raise ValueError(
                f"data.tokenizer_path is for bpe or sentencepiece; the {kind} tokenizer has no files "
                "to load; unset data.tokenizer_path."
            )
        if vocab_size is not None:
            raise ValueError(
                f"data.vocab_size={vocab_size} and data.tokenizer_path are both set; a loaded tokenizer "
                "brings its own vocabulary: unset data.vocab_size."
            )
        return cls.from_pretrained(path)
    return cls.from_train_text(train_text, vocab_size=vocab_size)


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """The tokenizer a run saved with `save(directory)`."""
    path = as_path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {TOKENIZER_FILE} at {path}: save one with tokenizer.save(directory).")
    data = _read_json_file(path)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in TOKENIZERS:
        is_hf = isinstance(data, dict) and "model" in data
        hint = " (an HF tokenizer.json: load it with data.tokenizer_path)" if is_hf else ""
        raise ValueError(f"{path} has tokenizer kind {kind!r}{hint}; known kinds: {', '.join(sorted(TOKENIZERS))}.")
    return TOKENIZERS[kind].from_json(data)
