"""Tokenizers: text <-> int32 ids, saved beside a run as `tokenizer.json` so a resumed run or a
sampler decodes with exactly the vocabulary the model was trained on.

Kinds: `char` (the train split's characters), `byte` (UTF-8 bytes), `bpe` (byte-level BPE as in
GPT-2, on HF `tokenizers`: trained on the train split, or GPT-2's own from vocab.json + merges.txt
or a tokenizer.json) and `sentencepiece` (optional extra). A new kind plugs in with one class that
has `from_train_text` / `from_json` (and `from_pretrained` if it can load files) and one line in
`TOKENIZERS`.
"""
from __future__ import annotations

import base64
import json
import os
import pathlib
import re
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
# GPT-2's one special token: document separator, and the id generation stops at (50256 in GPT-2).
ENDOFTEXT = "<|endoftext|>"


@runtime_checkable
class Tokenizer(Protocol):
    @property
    def name(self) -> str: ...  # the registry kind, e.g. 'char'

    @property
    def vocab_size(self) -> int: ...  # ids are in [0, vocab_size)

    @property
    def eos_id(self) -> int | None: ...  # end-of-text id (GPT-2: 50256); None for char/byte

    def encode(self, text: str) -> np.ndarray: ...  # int32, 1-D

    def decode(self, ids: Any) -> str: ...

    def save(self, directory: str | os.PathLike) -> None: ...  # writes tokenizer.json


class TokenizerClass(Protocol):
    """What the registry needs from a tokenizer class."""

    def from_train_text(self, text: str, *, vocab_size: int | None = None) -> Tokenizer: ...

    def from_json(self, data: dict[str, Any]) -> Tokenizer: ...


def _ids_1d(ids: Any, vocab_size: int) -> np.ndarray:
    ids_N = np.asarray(ids)
    if ids_N.ndim > 1:
        raise ValueError(f"decode expects a 1-D sequence of ids, got shape {ids_N.shape}.")
    ids_N = ids_N.reshape(-1).astype(np.int64)
    if ids_N.size and (ids_N.min() < 0 or ids_N.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size}), got [{ids_N.min()}, {ids_N.max()}].")
    return ids_N


def _write_json(directory: str | os.PathLike, data: dict[str, Any], indent: int | None = 1) -> None:
    path = pathlib.Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / TOKENIZER_FILE).write_text(json.dumps(data, ensure_ascii=False, indent=indent), encoding="utf-8")


def _fixed_vocab(kind: str, vocab_size: int | None) -> None:
    if vocab_size is not None:
        raise ValueError(
            f"data.vocab_size={vocab_size} is for learned vocabularies (bpe, sentencepiece); the {kind} "
            "tokenizer fixes its own; leave data.vocab_size unset."
        )


class CharTokenizer:
    """One id per distinct character of the TRAIN split, sorted by code point (like nanoGPT)."""

    name: ClassVar[str] = "char"

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ValueError("CharTokenizer vocabulary must be non-empty, distinct, sorted characters.")
        self.chars = chars
        # Code points sorted ascending: encode is a vectorised searchsorted, decode a gather.
        self._codes_V = np.array([ord(c) for c in chars], dtype=np.uint32)

    eos_id: ClassVar[None] = None

    @classmethod
    def from_train_text(cls, text: str, *, vocab_size: int | None = None) -> CharTokenizer:
        _fixed_vocab(cls.name, vocab_size)
        return cls("".join(sorted(set(text))))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(data["chars"])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        codes_N = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        pos_N = np.minimum(np.searchsorted(self._codes_V, codes_N), self.vocab_size - 1)
        unknown_N = self._codes_V[pos_N] != codes_N
        if unknown_N.any():
            i = int(unknown_N.argmax())
            raise ValueError(
                f"Character {chr(codes_N[i])!r} (U+{int(codes_N[i]):04X}, at position {i}) is not in "
                f"the char tokenizer's vocabulary of {self.vocab_size}, which was built from the "
                "train split; use the byte tokenizer for open-vocabulary text."
            )
        return pos_N.astype(np.int32)

    def decode(self, ids: Any) -> str:
        ids_N = _ids_1d(ids, self.vocab_size)
        return self._codes_V[ids_N].astype("<u4").tobytes().decode("utf-32-le")

    def save(self, directory: str | os.PathLike) -> None:
        _write_json(directory, {"kind": self.name, "chars": self.chars})


class ByteTokenizer:
    """UTF-8 bytes as ids (vocab 256): any text, any language, no unknown tokens."""

    name: ClassVar[str] = "byte"
    vocab_size: ClassVar[int] = 256
    eos_id: ClassVar[None] = None

    @classmethod
    def from_train_text(cls, text: str, *, vocab_size: int | None = None) -> ByteTokenizer:
        _fixed_vocab(cls.name, vocab_size)
        return cls()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ByteTokenizer:
        return cls()

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Any) -> str:
        # 'replace': sampled ids may cut a multi-byte character; valid UTF-8 round-trips exactly.
        return _ids_1d(ids, 256).astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def save(self, directory: str | os.PathLike) -> None:
        _write_json(directory, {"kind": self.name})


# --- subword tokenizers ------------------------------------------------------------------------

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


def _read_json_file(path: pathlib.Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"{path} is not valid UTF-8 JSON ({e}); it may be truncated or not a tokenizer file."
        raise ValueError(problem) from None


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
        path = pathlib.Path(path).expanduser()
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


def _import_sentencepiece():
    try:
        import sentencepiece
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
        import io

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
        path = pathlib.Path(path).expanduser()
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


# kind -> class.
TOKENIZERS: dict[str, TokenizerClass] = {
    CharTokenizer.name: CharTokenizer,
    ByteTokenizer.name: ByteTokenizer,
    BPETokenizer.name: BPETokenizer,
    SentencePieceTokenizer.name: SentencePieceTokenizer,
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
    path = pathlib.Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {TOKENIZER_FILE} at {path}: save one with tokenizer.save(directory).")
    data = _read_json_file(path)
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in TOKENIZERS:
        is_hf = isinstance(data, dict) and "model" in data
        hint = " (an HF tokenizer.json: load it with data.tokenizer_path)" if is_hf else ""
        raise ValueError(f"{path} has tokenizer kind {kind!r}{hint}; known kinds: {', '.join(sorted(TOKENIZERS))}.")
    return TOKENIZERS[kind].from_json(data)
