"""SentencePiece BPE with byte fallback (the optional `sentencepiece` extra)."""

from __future__ import annotations

import base64
import io
import os
import re
from typing import Any, ClassVar

import numpy as np

from gpt_jax.data.tokenizers.base import _ids_1d, _write_json
from gpt_jax.paths import as_path


def _import_sentencepiece():
    try:
        import sentencepiece  # here, not at the top: an optional extra that char/byte/bpe runs never need
    except ImportError:
        raise ImportError(
            "data.tokenizer='sentencepiece' needs the sentencepiece package: pip install -e \".[sentencepiece]\"."
        ) from None
    return sentencepiece


class SentencePieceTokenizer:
    """SentencePiece BPE with byte fallback, trained on the train split's lines (optional extra).

    Identity normalisation, no dummy prefix, whitespace kept, "\\n" a piece of its own: text
    round-trips exactly, except the character U+2581 ('▁'), SentencePiece's space marker, which
    decodes as a space.
    """

    name: ClassVar[str] = "sentencepiece"

    def __init__(self, model_proto: bytes):
        spm = _import_sentencepiece()
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab_size = int(self.sp.get_piece_size())
        self.eos_id = int(self.sp.eos_id()) if self.sp.eos_id() >= 0 else None

    @classmethod
    def from_train_text(cls, text: str, *, vocab_size: int | None = None) -> SentencePieceTokenizer:
        spm = _import_sentencepiece()
        if vocab_size is None:
            raise ValueError(
                "data.tokenizer='sentencepiece' needs data.vocab_size (e.g. 4096), or "
                "data.tokenizer_path to a trained .model file."
            )
        proto = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(text.split("\n")),
                model_writer=proto,
                vocab_size=vocab_size,
                model_type="bpe",
                byte_fallback=True,  # no unknown tokens: unseen characters become UTF-8 bytes
                character_coverage=0.9995,
                normalization_rule_name="identity",  # keep the text as it is (no NFKC)
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                split_digits=False,
                user_defined_symbols=["\n"],
                required_chars="\u2581",  # the space marker, so spaces decode even in space-free corpora
                max_sentence_length=1 << 16,
                num_threads=os.cpu_count() or 1,
                minloglevel=2,
            )
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[-1]
            need = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
            if need:
                raise ValueError(
                    f"data.vocab_size={vocab_size} is smaller than the {need.group(2)} characters SentencePiece keeps "
                    "(99.95% coverage of the train split); raise data.vocab_size above that."
                ) from None
            msg = re.sub(r"^.*?\] ", "", msg)  # drop the C++ source location
            raise ValueError(f"SentencePiece training failed: {msg}; adjust data.vocab_size.") from None
        return cls(proto.getvalue())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SentencePieceTokenizer:
        return cls(base64.b64decode(data["model_proto_base64"]))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
        path = as_path(path)  # a gs:// file stays a URI (epath)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; data.tokenizer_path must be a SentencePiece .model file.")
        try:
            return cls(path.read_bytes())
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            raise ValueError(f"{path} is not a SentencePiece model ({str(e).strip()[:200]}).") from None

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.sp.encode(text), dtype=np.int32).reshape(-1)

    def decode(self, ids: Any) -> str:
        return self.sp.decode(_ids_1d(ids, self.vocab_size).tolist())

    def save(self, directory: str | os.PathLike) -> None:
        proto = base64.b64encode(self.model_proto).decode("ascii")
        _write_json(directory, {"kind": self.name, "model_proto_base64": proto}, indent=None)
