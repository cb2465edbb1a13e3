"""Where text comes from: local corpora through our TFDS builder, or TFDS's built-in datasets.

`dataset` names:
  - a local corpus in `text_builder.CORPORA` (e.g. 'tiny_shakespeare'): read from the manual dir,
    prepared once to array_record under `data_dir`, no TensorFlow needed;
  - 'tfds:<name>[/<config>][:<version>]' (e.g. 'tfds:tiny_shakespeare', 'tfds:lm1b'): TFDS's own
    builders, which need TensorFlow (`pip install "gpt_jax[tf]"`) and usually the internet.

`load_text_splits` holds a split as one string (the random-window sampler's small corpora); it refuses a
split over MAX_JOINED_CHARS. Larger corpora stream document by document (`stream_tfds_text`,
gpt_jax.data.documents) into token shards (data.pipeline='grain').
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
from collections.abc import Iterable, Iterator

import tensorflow_datasets as tfds

import gpt_jax.data.text_builder as text_builder
from gpt_jax.paths import as_path

MANUAL_DIR_ENV = "GPT_JAX_DATA_DIR"
TFDS_DIR_ENV = "GPT_JAX_TFDS_DIR"
TFDS_PREFIX = "tfds:"
SPLITS = ("train", "validation")
MAX_JOINED_CHARS = 1 << 30  # a split held as one string; beyond it, data.pipeline='grain' streams it

# Repo root = parent of the `gpt_jax` package dir. CI and developer checkouts keep the offline
# datasets beside it, in <repo>/../shared/data.
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
_DEFAULT_MANUAL_DIR = _REPO_ROOT.parent / "shared" / "data"
_DEFAULT_TFDS_DIR = pathlib.Path("~/.cache/gpt_jax/tfds")

log = logging.getLogger(__name__)


def known_datasets() -> list[str]:
    return sorted(text_builder.CORPORA)


def _check_known(dataset: str) -> text_builder.LocalCorpus:
    corpus = text_builder.CORPORA.get(dataset)
    if corpus is None:
        raise ValueError(
            f"Unknown dataset {dataset!r}: known local corpora are {', '.join(known_datasets())}; "
            f"or use '{TFDS_PREFIX}<name>[/<config>][:<version>]' for a TFDS built-in dataset."
        )
    return corpus


def resolve_manual_dir(
    manual_dir: str | os.PathLike | None = None, *, dataset: str = "tiny_shakespeare"
) -> pathlib.Path:
    """The folder holding the local corpora: `manual_dir`, else $GPT_JAX_DATA_DIR, else
    <repo>/../shared/data. Raises FileNotFoundError unless it holds `dataset`'s file.

    Only the first one set is tried: a wrong explicit path is an error, not a silent fallback.
    """
    corpus = _check_known(dataset)
    return require_manual_files(dataset, [corpus.relative_path], manual_dir)


def choose_manual_dir(manual_dir: str | os.PathLike | None = None) -> tuple[pathlib.Path, str]:
    """(folder, where it came from): `manual_dir`, else $GPT_JAX_DATA_DIR, else <repo>/../shared/data."""
    if manual_dir:
        base, origin = pathlib.Path(manual_dir), "config.data.manual_dir"
    elif os.environ.get(MANUAL_DIR_ENV):
        base, origin = pathlib.Path(os.environ[MANUAL_DIR_ENV]), f"${MANUAL_DIR_ENV}"
    else:
        base, origin = _DEFAULT_MANUAL_DIR, "default <repo>/../shared/data"
    return base.expanduser(), origin


def require_manual_files(
    dataset: str, relative_paths: Iterable[str], manual_dir: str | os.PathLike | None = None
) -> pathlib.Path:
    """The manual dir (see `choose_manual_dir`), checked to hold every one of `relative_paths`.

    Shared by every dataset kept under the manual dir (text corpora, labelled sets, SFT files)."""
    base, origin = choose_manual_dir(manual_dir)
    for relative_path in relative_paths:
        path = base / relative_path
        if not path.is_file():
            raise FileNotFoundError(
                f"Dataset {dataset!r}: file not found at {path} (data dir {base} from {origin}); "
                f"set config.data.manual_dir or the env var {MANUAL_DIR_ENV} to the folder "
                f"that holds {relative_path}."
            )
    return base


def resolve_tfds_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where prepared TFDS data is cached: `data_dir`, else $GPT_JAX_TFDS_DIR, else
    ~/.cache/gpt_jax/tfds."""
    chosen = data_dir or os.environ.get(TFDS_DIR_ENV) or _DEFAULT_TFDS_DIR
    return as_path(chosen)  # a gs:// data_dir stays one (TFDS reads buckets itself)


def load_text_splits(
    dataset: str,
    *,
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    text_feature: str = "text",
) -> dict[str, str]:
    """{'train': text, 'validation': text} for a local corpus or a 'tfds:...' dataset."""
    if dataset.startswith(TFDS_PREFIX):
        return _load_tfds_builtin(dataset[len(TFDS_PREFIX) :], resolve_tfds_dir(data_dir), text_feature)
    return _load_local(dataset, resolve_manual_dir(manual_dir, dataset=dataset), resolve_tfds_dir(data_dir))


def _load_local(dataset: str, manual_dir: pathlib.Path, data_dir: pathlib.Path) -> dict[str, str]:
    builder = _prepared_local(dataset, manual_dir, data_dir)
    return {split: text_builder.read_split_text(builder, split) for split in SPLITS}


def _prepared_local(dataset: str, manual_dir: pathlib.Path, data_dir: pathlib.Path) -> text_builder.GptJaxText:
    source_md5 = text_builder.file_md5(manual_dir / text_builder.CORPORA[dataset].relative_path)
    return prepare_builder(text_builder.GptJaxText, dataset, data_dir, manual_dir, source_md5)


def local_builder(
    dataset: str, *, manual_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> text_builder.GptJaxText:
    """A local corpus's prepared builder (its records read one at a time by the shard writer)."""
    return _prepared_local(dataset, resolve_manual_dir(manual_dir, dataset=dataset), resolve_tfds_dir(data_dir))


def prepare_builder(
    builder_cls: type[tfds.core.GeneratorBasedBuilder],
    config: str,
    data_dir: str | os.PathLike,
    manual_dir: pathlib.Path,
    source_md5: str,
) -> tfds.core.GeneratorBasedBuilder:
    """A builder of ours, prepared to array_record under `data_dir` (once: later calls reuse the
    cache while its metadata's `source_md5` still matches the source files and every record reads
    back; a cache that is stale, incomplete or corrupted is deleted and prepared again)."""
    path = cache_path(builder_cls, config, data_dir)
    if path.exists():
        try:
            builder = builder_cls(config=config, data_dir=str(data_dir))
            problem = _cache_problem(builder, source_md5)
        except Exception as e:  # noqa: BLE001 - whatever fails reading the cache back, preparing again fixes
            problem = f"cannot be read back ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        if problem is None:
            return builder
        log.warning("The prepared TFDS cache %s %s; deleting it and preparing again.", path, problem)
        try:
            # Deleted by us: TFDS's overwrite modes refuse a builder whose info came from disk.
            shutil.rmtree(path)
        except OSError as e:
            raise ValueError(
                f"The prepared TFDS cache {path} {problem} and could not be deleted ({e}); delete it by hand."
            ) from None
    builder = builder_cls(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
        file_format="array_record",
    )
    return builder


def cache_path(builder_cls: type[tfds.core.DatasetBuilder], config: str, data_dir: str | os.PathLike) -> pathlib.Path:
    """Where `builder_cls(config=config, data_dir=data_dir)` keeps its prepared files (its `data_path`),
    known without constructing it: construction already reads the cache's dataset_info.json."""
    return pathlib.Path(data_dir) / builder_cls.name / config / str(builder_cls.VERSION)


def _cache_problem(builder: tfds.core.DatasetBuilder, source_md5: str) -> str | None:
    """Why the prepared cache cannot be reused (None: it can). Reads every record (tiny_shakespeare: ~10 ms)."""
    if not builder.is_prepared():
        return "is incomplete (no dataset_info.json)"
    if builder.info.metadata.get("source_md5") != source_md5:
        return "was prepared from an older version of its source file"
    for split, split_info in builder.info.splits.items():
        source = builder.as_data_source(split=split)
        if len(source) != split_info.num_examples:
            return f"holds {len(source)} {split} records, not {split_info.num_examples}"
        for i in range(len(source)):
            record = source[i]
            if not isinstance(record, dict) or any(value is None for value in record.values()):
                return f"has an unreadable {split} record ({i})"
    return None


def _load_tfds_builtin(name: str, data_dir: pathlib.Path, text_feature: str) -> dict[str, str]:
    """TFDS's own text datasets, each split streamed and joined (one example = one document/sentence;
    newlines keep them apart in the token stream), refusing a split over MAX_JOINED_CHARS."""
    return {
        split: _join_bounded(name, split, stream_tfds_text(name, split, data_dir, text_feature)) for split in SPLITS
    }


def stream_tfds_text(name: str, split: str, data_dir: pathlib.Path, text_feature: str) -> Iterator[str]:
    """The `text_feature` of each example of a TFDS split, one at a time. A split prepared as array_record
    is read without TensorFlow; otherwise `tfds.load` (needs TF), which streams. Datasets without a
    validation split (lm1b) give their test split for 'validation'."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    if builder.is_prepared() and builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
        split = split if split != "validation" or "validation" in builder.info.splits else "test"
        source = builder.as_data_source(split=split)
        for i in range(len(source)):
            yield _as_text(source[i][text_feature])
        return
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise ImportError(
            f"Dataset 'tfds:{name}' needs TensorFlow, which is not installed: "
            f'pip install "gpt_jax[tf]", or use a local corpus ({", ".join(known_datasets())}).'
        ) from None
    ds, info = tfds.load(name, split="train", data_dir=str(data_dir), with_info=True)
    if split == "validation":
        ds = tfds.load(name, split="validation" if "validation" in info.splits else "test", data_dir=str(data_dir))
    for ex in tfds.as_numpy(ds):
        yield _as_text(ex[text_feature])


def _join_bounded(name: str, split: str, texts: Iterable[str]) -> str:
    parts, total = [], 0
    for text in texts:
        total += len(text) + 1
        if total > MAX_JOINED_CHARS:
            raise ValueError(
                f"Dataset 'tfds:{name}' {split} split is over {MAX_JOINED_CHARS:,} chars, too large to hold as one "
                "string: set config.data.pipeline='grain' (token shards streamed from disk)."
            )
        parts.append(text)
    return "\n".join(parts)


def _as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
