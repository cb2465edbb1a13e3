"""Tokenizers: text <-> int32 ids, one module per kind, saved beside a run as `tokenizer.json`.

Kinds: `char` (the train split's characters), `byte` (UTF-8 bytes), `bpe` (byte-level BPE as in
GPT-2: trained, or loaded from GPT-2's files) and `sentencepiece` (optional extra). A new kind is
one module plus one line in `registry.TOKENIZERS`. The submodules import each other directly;
this file only re-exports the public names.
"""

from gpt_jax.data.tokenizers.base import ENDOFTEXT, TOKENIZER_FILE, Tokenizer, TokenizerClass
from gpt_jax.data.tokenizers.bpe import BPETokenizer
from gpt_jax.data.tokenizers.byte import ByteTokenizer
from gpt_jax.data.tokenizers.char import CharTokenizer
from gpt_jax.data.tokenizers.registry import TOKENIZERS, build_tokenizer, load_tokenizer
from gpt_jax.data.tokenizers.sentencepiece import SentencePieceTokenizer

__all__ = [
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "ENDOFTEXT",
    "SentencePieceTokenizer",
    "TOKENIZERS",
    "TOKENIZER_FILE",
    "Tokenizer",
    "TokenizerClass",
    "build_tokenizer",
    "load_tokenizer",
]
