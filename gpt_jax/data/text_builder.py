"""Project-defined TFDS builder for local plain-text corpora.

Why a builder of our own: TFDS's built-in text datasets need TensorFlow to prepare and read,
while a `GeneratorBasedBuilder` written here prepares to `array_record` and reads back through
`as_data_source()` with no TensorFlow at all. The prepared files are a cache: a second run finds
them under `data_dir` and starts at once.

Split convention (nanoGPT's `prepare.py`): by POSITION, not at random. With `n` characters,
`n_train = int(n * train_fraction)` (floor); train = text[:n_train], validation = text[n_train:].
For tiny_shakespeare, n = 1,115,394 and n_train = int(1,003,854.6) = 1,003,854.

To add a corpus: one entry in `CORPORA` (relative path under the manual dir + a reader).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import pathlib
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

# Bump when the stored layout or split rule changes, so old caches are not reused silently.
_VERSION = tfds.core.Version("1.0.0")

# Characters per stored example. Small enough that no record is large, big enough that
# tiny_shakespeare is ~17 records, not a million.
CHUNK_CHARS = 1 << 16

TRAIN_FRACTION = 0.9


def decode_utf8(data: bytes, path: pathlib.Path) -> str:
    """`data` (the bytes of `path`) as text; a non-UTF-8 byte is a one-line error naming where it is."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise ValueError(
            f"{path} is not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} (line {line}, byte {column} "
            f"of that line) cannot be decoded; re-encode the file as UTF-8 (e.g. iconv -f <its encoding> -t utf-8)."
        ) from None


def read_utf8(path: pathlib.Path) -> str:
    # Decoded as a whole, like open(newline=""): the file's characters exactly (no \r\n translation).
    return decode_utf8(path.read_bytes(), path)


def read_poetry_jsonl(path: pathlib.Path) -> str:
    # chinese-poetry JSONL: one poem per line with `paragraphs: [str]`; a blank line between poems.
    poems = []
    for number, line in enumerate(io.StringIO(read_utf8(path), newline=None), 1):
        if line.strip():
            try:
                poems.append("\n".join(json.loads(line)["paragraphs"]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}:{number}: expected a JSON object with a 'paragraphs' list ({type(e).__name__}: {e}); "
                    "fix or drop that line."
                ) from None
    return "\n\n".join(poems) + "\n"


def iter_tsv_rows(path: pathlib.Path, num_fields: int = 2) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each row after the header. QUOTE_NONE: SST-2's sentences hold bare
    quote characters, which must stay text; so one row is exactly one line."""
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    next(reader, None)  # header ('label<TAB>sentence' / 'label<TAB>content')
    for fields in reader:
        if len(fields) != num_fields:
            raise ValueError(
                f"{path}:{reader.line_num}: expected {num_fields} tab-separated fields, got "
                f"{len(fields)}; fix that row (a tab inside the text?)."
            )
        yield reader.line_num, fields


def read_tsv_sentences(path: pathlib.Path) -> str:
    # Column 2 of a labelled TSV (labels dropped), one sentence per line, file order.
    return "".join(fields[1] + "\n" for _, fields in iter_tsv_rows(path))


@dataclasses.dataclass(frozen=True)
class LocalCorpus:
    relative_path: str  # under the manual dir (shared/data)
    description: str
    reader: Callable[[pathlib.Path], str] = read_utf8


CORPORA: dict[str, LocalCorpus] = {
    "tiny_shakespeare": LocalCorpus(
        "tiny_shakespeare/input.txt", "Karpathy's tiny shakespeare, 1,115,394 chars, 65 distinct."
    ),
    "wikitext2": LocalCorpus(
        "wikitext2/wiki.test.raw",
        "WikiText-2 raw TEST file only (no raw train offline), split 90/10 by position.",
    ),
    "song_ci": LocalCorpus(
        "chinese_poetry/song_ci.jsonl",
        "Song ci (simplified Chinese), paragraphs joined by newlines, poems by blank lines.",
        read_poetry_jsonl,
    ),
    # Pretraining corpus for the SST-2 fine-tuning runs: TRAIN sentences only, so the model never
    # sees dev/test text before it is evaluated on them.
    "sst2_text": LocalCorpus(
        "sst2/train.tsv",
        "SST-2 train sentences/phrases (labels removed), one per line in file order, split 90/10 by position.",
        read_tsv_sentences,
    ),
}


@dataclasses.dataclass(eq=False)
class TextCorpusConfig(tfds.core.BuilderConfig):
    relative_path: str = ""
    reader: Callable[[pathlib.Path], str] = read_utf8
    train_fraction: float = TRAIN_FRACTION
    chunk_chars: int = CHUNK_CHARS


def split_point(num_chars: int, train_fraction: float = TRAIN_FRACTION) -> int:
    """Index of the first validation character (floor, like nanoGPT's int(n * 0.9))."""
    return int(num_chars * train_fraction)


def file_md5(path: pathlib.Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class GptJaxText(tfds.core.GeneratorBasedBuilder):
    """Local text corpus -> `train` / `validation` splits of consecutive text chunks."""

    VERSION = _VERSION
    RELEASE_NOTES = {"1.0.0": "Chunks of text with an `index`; 90/10 split by position."}
    BUILDER_CONFIGS = [
        TextCorpusConfig(
            name=name,
            description=corpus.description,
            relative_path=corpus.relative_path,
            reader=corpus.reader,
        )
        for name, corpus in CORPORA.items()
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the folder holding the corpora (e.g. shared/data) as the manual dir; "
        "see gpt_jax.data.sources.resolve_manual_dir."
    )

    @property
    def corpus_config(self) -> TextCorpusConfig:
        assert isinstance(self.builder_config, TextCorpusConfig)
        return self.builder_config

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    # Examples are stored shuffled by key; `index` restores text order.
                    "index": tfds.features.Scalar(dtype=np.int32),
                    "text": tfds.features.Text(),
                }
            ),
            # Saved beside the records, so a reader can check the cache matches the source file.
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.corpus_config
        path = pathlib.Path(dl_manager.manual_dir) / cfg.relative_path
        text = cfg.reader(path)
        n_train = split_point(len(text), cfg.train_fraction)
        if not 0 < n_train < len(text):
            raise ValueError(_too_short(path, len(text), cfg))
        self.info.metadata.update(
            source_file=cfg.relative_path,
            source_md5=file_md5(path),
            num_chars=len(text),
            num_train_chars=n_train,
            train_fraction=cfg.train_fraction,
        )
        return {
            "train": self._generate_examples(text[:n_train]),
            "validation": self._generate_examples(text[n_train:]),
        }

    def _generate_examples(self, text: str) -> Iterator[tuple[int, dict]]:
        step = self.corpus_config.chunk_chars
        for index, start in enumerate(range(0, len(text), step)):
            yield index, {"index": index, "text": text[start : start + step]}


def _too_short(path: pathlib.Path, num_chars: int, cfg: TextCorpusConfig) -> str:
    fix = f"or set config.data.manual_dir (or $GPT_JAX_DATA_DIR) to the folder that holds the real {cfg.relative_path}."
    size = path.stat().st_size
    if size == 0:
        return f"corpus {path} is empty (0 bytes); put the training text in it, {fix}"
    return (
        f"corpus {path} holds {num_chars} characters of text ({size} bytes): too few to split "
        f"{cfg.train_fraction:g}/{1 - cfg.train_fraction:g} into non-empty train and validation parts; "
        f"add text to it, {fix}"
    )


def read_split_text(builder: GptJaxText, split: str) -> str:
    """Concatenate a prepared split's chunks back in `index` order."""
    source = builder.as_data_source(split=split)
    examples = [source[i] for i in range(len(source))]
    examples.sort(key=lambda ex: int(ex["index"]))
    return "".join(_as_str(ex["text"]) for ex in examples)


def _as_str(value: object) -> str:
    # The Text feature decodes to bytes in data sources (no tf.string to turn into str).
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)
