"""Byte-level BPE (GPT-2's scheme) on HF `tokenizers`: trained on the train split, or GPT-2's own
from vocab.json + merges.txt or a tokenizer.json."""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, ClassVar

import numpy as np

from gpt_jax.data.tokenizers.base import ENDOFTEXT, TOKENIZER_FILE, _ids_1d, _read_json_file, _write_json
from gpt_jax.paths import as_path

# A newline between two non-blank characters always ends one GPT-2 pre-token and starts the next
# (no pre-token pattern spans it, and the lone "\n" matches the same way with or without what
# follows), so byte-level BPE encodes text cut there exactly as it encodes the whole, and the
# pieces can be encoded in parallel.
_SAFE_SPLIT = re.compile(r"(?<=\S)\n(?=\S)")
_CHUNK_CHARS = 1 << 15


def _safe_chunks(text: str, size: int = _CHUNK_CHARS) -> list[str]:
    """`text` cut at safe newlines into pieces of about `size` characters (concatenation == text)."""
    pieces, start = [], 0
    for m in _SAFE_SPLIT.finditer(text):
        if m.end() - start >= size:
            pieces.append(text[start : m.end()])
            start = m.end()
    pieces.append(text[start:])
    return pieces


def _hf_call(where: pathlib.Path | str, fn, *args):
    """Run an HF `tokenizers` call; its errors (Rust panics included) become one ValueError line."""
    try:
        return fn(*args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # pyo3's PanicException derives from BaseException
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{where}: HF tokenizers could not load it ({msg}).") from None


def _check_merges(merges: list[tuple[str, str]], vocab: dict[str, int], where: str, vocab_name: str) -> None:
    """Every merge a + b needs a, b and ab in the vocabulary (else `tokenizers` panics or misencodes)."""
    for lineno, (a, b) in merges:
        for token in (a, b, a + b):
            if token not in vocab:
                raise ValueError(
                    f"{where} line {lineno}: merge {a!r} + {b!r} needs token {token!r}, which {vocab_name} "
                    "does not have; vocab and merges must come from the same tokenizer."
                )


def _parse_merges_txt(path: pathlib.Path) -> list[tuple[int, tuple[str, str]]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a GPT-2 BPE tokenizer needs vocab.json and merges.txt side by side."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}).") from None
    merges = []
    # Split on "\n" only: str.splitlines would also split on \x85, \u2028, ... inside tokens.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path} line {lineno}: expected two tokens separated by one space, got {line!r}.")
        merges.append((lineno, (parts[0], parts[1])))
    return merges


def _eos_from_config(directory: pathlib.Path, vocab: dict[str, int]) -> str | None:
    """The end-of-text token: tokenizer_config.json's eos_token if given (added after the vocabulary
    if missing from it, as HF's GPT2Tokenizer does), else GPT-2's if in the vocabulary."""
    config = directory / "tokenizer_config.json"
    if config.is_file():
        eos = _read_json_file(config).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if isinstance(eos, str) and eos:
            return eos
    return ENDOFTEXT if ENDOFTEXT in vocab else None


class BPETokenizer:
    """Byte-level BPE (GPT-2's scheme) on HF `tokenizers`: any text, any language, round-trips exactly.

    Trained on the train split (`data.vocab_size` ids, the last one `<|endoftext|>` as in GPT-2),
    or loaded from GPT-2's vocab.json + merges.txt or an HF tokenizer.json (`data.tokenizer_path`).
    The run's tokenizer.json embeds the HF tokenizer JSON, so a workdir needs no other file.
    """

    name: ClassVar[str] = "bpe"

    def __init__(self, hf_tokenizer, eos_token: str | None = ENDOFTEXT):
        self.hf = hf_tokenizer  # a tokenizers.Tokenizer
        vocab = hf_tokenizer.get_vocab(with_added_tokens=True)
        if not vocab:
            raise ValueError("BPE tokenizer has an empty vocabulary.")
        self._vocab_size = max(vocab.values()) + 1
        self.eos_token = eos_token if eos_token in vocab else None
        self.eos_id = vocab[self.eos_token] if self.eos_token else None
        self._splittable = self._safe_to_split(json.loads(hf_tokenizer.to_str()))

    @staticmethod
    def _safe_to_split(spec: dict[str, Any]) -> bool:
        # _safe_chunks is exact only for GPT-2's own pipeline: no normalizer, regex ByteLevel, no
        # prefix space (else every piece would gain one), no added token that holds a newline or
        # strips the whitespace beside it (it could reach across a cut).
        pre = spec.get("pre_tokenizer") or {}
        added = spec.get("added_tokens") or []
        return (
            spec.get("normalizer") is None
            and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False)
            and not any("\n" in t.get("content", "") or t.get("lstrip") or t.get("rstrip") for t in added)
        )

    @staticmethod
    def _byte_level(model):
        import tokenizers
        from tokenizers import decoders, pre_tokenizers

        hf = tokenizers.Tokenizer(model)
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        return hf

    @classmethod
    def from_train_text(cls, text: str, *, vocab_size: int | None = None) -> BPETokenizer:
        import tokenizers
        from tokenizers import models, pre_tokenizers, trainers

        if vocab_size is None:
            raise ValueError(
                "data.tokenizer='bpe' needs data.vocab_size (e.g. 4096) to learn a vocabulary from the train "
                "split, or data.tokenizer_path (GPT-2's vocab.json + merges.txt, or a tokenizer.json) to load one."
            )
        if vocab_size < 257:
            raise ValueError(
                f"data.vocab_size={vocab_size} is too small for byte-level BPE: 256 bytes + "
                "<|endoftext|> need at least 257; raise it."
            )
        hf = cls._byte_level(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 1,  # + <|endoftext|> below
            min_frequency=2,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable, seen or not
            show_progress=False,
        )
        hf.train_from_iterator(_safe_chunks(text), trainer)
        hf.add_special_tokens([tokenizers.AddedToken(ENDOFTEXT, special=True)])  # the last id, as GPT-2's
        return cls(hf, ENDOFTEXT)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BPETokenizer:
        import tokenizers

        if not isinstance(data.get("hf_tokenizer"), dict):
            raise ValueError("bpe tokenizer.json has no 'hf_tokenizer' object; save it with tokenizer.save(dir).")
        hf = _hf_call("tokenizer.json (hf_tokenizer)", tokenizers.Tokenizer.from_str, json.dumps(data["hf_tokenizer"]))
        return cls(hf, data.get("eos_token"))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> BPETokenizer:
        """A directory with tokenizer.json or vocab.json + merges.txt (an HF GPT-2 folder), one of
        those files, or a gpt_jax workdir's tokenizer.json."""
        path = as_path(path)  # a gs:// folder stays a URI (epath)
        if path.is_dir():
            if (path / TOKENIZER_FILE).is_file():
                return cls._from_tokenizer_json(path / TOKENIZER_FILE)
            if (path / "vocab.json").is_file() or (path / "merges.txt").is_file():
                return cls._from_vocab_merges(path / "vocab.json", path / "merges.txt")
            raise FileNotFoundError(
                f"{path} holds no tokenizer.json and no vocab.json + merges.txt; a BPE tokenizer needs one of them."
            )
        if path.name == "merges.txt":
            return cls._from_vocab_merges(path.parent / "vocab.json", path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; give a tokenizer.json, a vocab.json or their folder.")
        data = _read_json_file(path)
        if isinstance(data, dict) and ("model" in data or "kind" in data):
            return cls._from_tokenizer_json(path, data)
        return cls._from_vocab_merges(path, path.parent / "merges.txt")

    @classmethod
    def _from_vocab_merges(cls, vocab_path: pathlib.Path, merges_path: pathlib.Path) -> BPETokenizer:
        import tokenizers
        from tokenizers import models, pre_tokenizers

        if not vocab_path.is_file():
            raise FileNotFoundError(
                f"{vocab_path} not found: a GPT-2 BPE tokenizer needs vocab.json and merges.txt side by side."
            )
        vocab = _read_json_file(vocab_path)
        if not isinstance(vocab, dict) or not all(isinstance(v, int) and v >= 0 for v in vocab.values()):
            raise ValueError(f"{vocab_path} is not a BPE vocabulary: expected a JSON object of token -> id >= 0.")
        if len(set(vocab.values())) != len(vocab):
            raise ValueError(f"{vocab_path} gives the same id to several tokens; it is not a BPE vocabulary.")
        merges = _parse_merges_txt(merges_path)
        _check_merges(merges, vocab, str(merges_path), vocab_path.name)
        missing = sorted(c for c in pre_tokenizers.ByteLevel.alphabet() if c not in vocab)
        if missing:
            raise ValueError(
                f"{vocab_path} lacks {len(missing)} of the 256 byte symbols of byte-level BPE (e.g. {missing[0]!r}); "
                "it is not a GPT-2-style vocabulary."
            )
        model = _hf_call(merges_path, models.BPE, vocab, [m for _, m in merges])
        hf = cls._byte_level(model)
        eos = _eos_from_config(vocab_path.parent, vocab)
        if eos:  # one id even when it appears in text, as HF's GPT2Tokenizer
            hf.add_special_tokens([tokenizers.AddedToken(eos, special=True)])
        return cls(hf, eos)

    @classmethod
    def _from_tokenizer_json(cls, path: pathlib.Path, data: Any = None) -> BPETokenizer:
        import tokenizers

        data = _read_json_file(path) if data is None else data
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a tokenizer.json: expected a JSON object.")
        if "kind" in data:  # a gpt_jax workdir's tokenizer.json
            if data["kind"] != cls.name:
                raise ValueError(f"{path} is a gpt_jax {data['kind']!r} tokenizer, not a BPE one.")
            return cls.from_json(data)
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(
                f"{path}: tokenizer model type {model.get('type')!r} is not BPE; the bpe tokenizer loads BPE "
                "tokenizer.json files (GPT-2 style)."
            )
        vocab = model.get("vocab") or {}
        raw = model.get("merges") or []
        merges = [(i + 1, tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)) for i, m in enumerate(raw)]
        if any(len(m) != 2 for _, m in merges):
            raise ValueError(f"{path}: model.merges entries must be 'a b' strings or [a, b] pairs.")
        _check_merges(merges, vocab, f"{path} model.merges", "model.vocab")
        hf = _hf_call(path, tokenizers.Tokenizer.from_str, json.dumps(data))
        eos = _eos_from_config(path.parent, hf.get_vocab(with_added_tokens=True))
        if eos and eos not in hf.get_vocab(with_added_tokens=True):
            hf.add_special_tokens([tokenizers.AddedToken(eos, special=True)])
        return cls(hf, eos)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> np.ndarray:
        pieces = _safe_chunks(text) if self._splittable else [text]
        encode_batch = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)  # fast: no offsets
        ids = [np.asarray(e.ids, np.int32) for e in encode_batch(pieces, add_special_tokens=False)]
        return np.concatenate(ids) if ids else np.zeros(0, np.int32)

    def decode(self, ids: Any) -> str:
        # Cut multi-byte characters (sampling can end mid-character) decode to U+FFFD, never raise.
        return self.hf.decode(_ids_1d(ids, self.vocab_size).tolist(), skip_special_tokens=False)

    def save(self, directory: str | os.PathLike) -> None:
        spec = json.loads(self.hf.to_str())
        _write_json(directory, {"kind": self.name, "eos_token": self.eos_token, "hf_tokenizer": spec}, indent=None)

    def save_pretrained(self, directory: str | os.PathLike, model_max_length: int | None = None) -> None:
        """HF layout (tokenizer.json, vocab.json + merges.txt, tokenizer_config.json) that
        `transformers.AutoTokenizer.from_pretrained(directory)` loads."""
        path = pathlib.Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(path / TOKENIZER_FILE))
        self.hf.model.save(str(path))  # vocab.json + merges.txt, for GPT-2-file readers
        # GPT-2's vocab.json lists <|endoftext|> too: add the special tokens the model file leaves out.
        vocab = self.hf.get_vocab(with_added_tokens=True)
        (path / "vocab.json").write_text(
            json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])), ensure_ascii=False), encoding="utf-8"
        )
        eos = self.eos_token
        config: dict[str, Any] = {
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,  # exact round trip
            "bos_token": eos,
            "eos_token": eos,
            "unk_token": eos,
        }
        if model_max_length:
            config["model_max_length"] = int(model_max_length)
        (path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
