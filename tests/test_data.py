"""Data layer tests: real corpora from shared/data (found like the code finds them), TFDS cache
in a tmp dir, no network, no TensorFlow."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gpt_jax.data import (
    TokenBatcher,
    Tokenizer,
    build_tokenizer,
    eval_batches,
    load_text_splits,
    load_tokenizer,
    prepare_tokens,
    resolve_manual_dir,
    resolve_tfds_dir,
    sources,
    text_builder,
)
from gpt_jax.data.tokenizers import ByteTokenizer, CharTokenizer

SHAKESPEARE_CHARS = 1_115_394
SHAKESPEARE_TRAIN_CHARS = 1_003_854  # int(0.9 * 1_115_394) = int(1_003_854.6): floor, as nanoGPT


@pytest.fixture(scope="session")
def manual_dir() -> pathlib.Path:
    # Shared data missing is a FAILURE naming the path, never a skip (CI always has it).
    try:
        return resolve_manual_dir(None, dataset="tiny_shakespeare")
    except FileNotFoundError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def shakespeare(manual_dir, tfds_dir) -> dict[str, str]:
    return load_text_splits("tiny_shakespeare", data_dir=tfds_dir)


@pytest.fixture(scope="session")
def raw_shakespeare(manual_dir) -> str:
    return (manual_dir / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")


# --- sources and the TFDS builder -------------------------------------------------------------


def test_split_is_90_10_by_position(shakespeare, raw_shakespeare):
    train, val = shakespeare["train"], shakespeare["validation"]
    assert len(raw_shakespeare) == SHAKESPEARE_CHARS
    assert text_builder.split_point(SHAKESPEARE_CHARS) == SHAKESPEARE_TRAIN_CHARS
    assert len(train) + len(val) == SHAKESPEARE_CHARS
    assert len(train) == SHAKESPEARE_TRAIN_CHARS
    assert train == raw_shakespeare[:SHAKESPEARE_TRAIN_CHARS]
    assert val == raw_shakespeare[SHAKESPEARE_TRAIN_CHARS:]


def test_second_load_reuses_prepared_cache(shakespeare, tfds_dir, monkeypatch):
    def no_generation(self, text):
        raise AssertionError("prepared again although the cache is valid")

    monkeypatch.setattr(text_builder.GptJaxText, "_generate_examples", no_generation)
    again = load_text_splits("tiny_shakespeare", data_dir=tfds_dir)  # would raise if it prepared again
    assert again == shakespeare
    assert (tfds_dir / "gpt_jax_text" / "tiny_shakespeare" / "1.0.0" / "dataset_info.json").is_file()


def test_cache_is_rebuilt_when_source_changes(tmp_path):
    corpus = tmp_path / "data" / "tiny_shakespeare" / "input.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("a" * 100, encoding="utf-8")
    first = load_text_splits("tiny_shakespeare", manual_dir=corpus.parents[1], data_dir=tmp_path / "tfds")
    assert first == {"train": "a" * 90, "validation": "a" * 10}
    corpus.write_text("b" * 20, encoding="utf-8")
    second = load_text_splits("tiny_shakespeare", manual_dir=corpus.parents[1], data_dir=tmp_path / "tfds")
    assert second == {"train": "b" * 18, "validation": "b" * 2}


@pytest.mark.parametrize("dataset", sorted(text_builder.CORPORA))
def test_every_local_corpus_round_trips(dataset, manual_dir, tfds_dir):
    corpus = text_builder.CORPORA[dataset]
    full = corpus.reader(manual_dir / corpus.relative_path)
    splits = load_text_splits(dataset, data_dir=tfds_dir)
    assert splits["train"] + splits["validation"] == full
    assert len(splits["train"]) == text_builder.split_point(len(full))


def test_resolution_order(manual_dir, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(sources.MANUAL_DIR_ENV, str(empty))
    assert resolve_manual_dir(str(manual_dir)) == manual_dir  # explicit beats env
    monkeypatch.setenv(sources.MANUAL_DIR_ENV, str(manual_dir))
    assert resolve_manual_dir(None) == manual_dir  # env beats default
    monkeypatch.delenv(sources.MANUAL_DIR_ENV)
    repo_root = pathlib.Path(sources.__file__).resolve().parents[2]
    assert resolve_manual_dir(None) == repo_root.parent / "shared" / "data"

    monkeypatch.setenv(sources.TFDS_DIR_ENV, str(tmp_path / "t"))
    assert resolve_tfds_dir(None) == tmp_path / "t"
    assert resolve_tfds_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv(sources.TFDS_DIR_ENV)
    assert resolve_tfds_dir(None) == pathlib.Path("~/.cache/gpt_jax/tfds").expanduser()


def test_missing_data_dir_error_names_path_and_fix(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(sources.MANUAL_DIR_ENV, str(missing))
    with pytest.raises(FileNotFoundError) as e:
        load_text_splits("tiny_shakespeare", data_dir=tmp_path / "tfds")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(missing / "tiny_shakespeare" / "input.txt") in msg
    assert "GPT_JAX_DATA_DIR" in msg and "config.data.manual_dir" in msg
    with pytest.raises(FileNotFoundError, match="config.data.manual_dir"):
        resolve_manual_dir(str(missing))


def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown dataset 'nope'.*tiny_shakespeare.*tfds:") as e:
        load_text_splits("nope", data_dir=tmp_path)
    assert "\n" not in str(e.value)


def test_tfds_builtin_without_tensorflow_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails even where TF is installed

    def must_not_load(*args, **kwargs):
        raise AssertionError("tfds.load must not run without TensorFlow (it stalls offline)")

    monkeypatch.setattr(tfds, "load", must_not_load)
    with pytest.raises(ImportError, match=r'pip install "gpt_jax\[tf\]"') as e:
        load_text_splits("tfds:tiny_shakespeare", data_dir=tmp_path)
    assert "\n" not in str(e.value) and "tiny_shakespeare" in str(e.value)


# --- tokenizers -------------------------------------------------------------------------------


def _song_ci_text(manual_dir: pathlib.Path, num_poems: int = 5) -> str:
    path = manual_dir / "chinese_poetry" / "song_ci.jsonl"
    if not path.is_file():
        pytest.fail(f"Chinese test data missing: {path} (set GPT_JAX_DATA_DIR to shared/data).")
    with open(path, encoding="utf-8") as f:
        return "\n".join("\n".join(json.loads(next(f))["paragraphs"]) for _ in range(num_poems))


def test_char_tokenizer_vocab_and_round_trip(shakespeare):
    tok = build_tokenizer("char", shakespeare["train"])
    assert isinstance(tok, Tokenizer) and tok.name == "char"
    assert tok.vocab_size == 65
    for text in shakespeare.values():
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and ids.ndim == 1 and len(ids) == len(text)
        assert ids.min() >= 0 and ids.max() < 65
        assert tok.decode(ids) == text
    assert tok.decode(tok.encode("")) == ""
    # Sorted by code point like nanoGPT: '\n' first, 'z' last.
    assert tok.decode([0]) == "\n" and tok.decode([64]) == "z"


def test_char_tokenizer_unknown_char_error(shakespeare):
    tok = build_tokenizer("char", shakespeare["train"])
    with pytest.raises(ValueError, match=r"'é'.*train split") as e:
        tok.encode("caf\u00e9")
    assert "\n" not in str(e.value)


def test_byte_tokenizer_round_trips_chinese(manual_dir):
    text = _song_ci_text(manual_dir)
    assert any("\u4e00" <= c <= "\u9fff" for c in text)
    tok = build_tokenizer("byte", text)
    assert tok.vocab_size == 256 and tok.name == "byte"
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and len(ids) == len(text.encode("utf-8")) > len(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids[:1]) == "\ufffd"  # a cut multi-byte char decodes, never raises
    with pytest.raises(ValueError):
        build_tokenizer("char", "abc").encode(text)


@pytest.mark.parametrize("kind", ["char", "byte"])
def test_tokenizer_save_load(kind, shakespeare, tmp_path):
    tok = build_tokenizer(kind, shakespeare["train"])
    tok.save(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["kind"] == kind
    loaded = load_tokenizer(tmp_path / "run")
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    sample = shakespeare["validation"][:2000]
    np.testing.assert_array_equal(loaded.encode(sample), tok.encode(sample))


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"kind": "wordpiece"}')
    with pytest.raises(ValueError, match=r"'wordpiece'.*bpe, byte, char, sentencepiece"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="Unknown tokenizer kind"):
        build_tokenizer("wordpiece", "text")


def test_prepare_tokens_reuses_given_tokenizer(manual_dir, tfds_dir, shakespeare):
    tok, tokens = prepare_tokens("tiny_shakespeare", "char", data_dir=tfds_dir)
    assert tok.vocab_size == 65
    assert tokens["train"].shape == (SHAKESPEARE_TRAIN_CHARS,)
    assert tokens["validation"].shape == (SHAKESPEARE_CHARS - SHAKESPEARE_TRAIN_CHARS,)
    given = CharTokenizer(tok.chars)
    tok2, tokens2 = prepare_tokens("tiny_shakespeare", "char", data_dir=tfds_dir, tokenizer=given)
    assert tok2 is given
    np.testing.assert_array_equal(tokens2["validation"], tokens["validation"])
    with pytest.raises(ValueError, match="resumed run"):
        prepare_tokens("tiny_shakespeare", "char", data_dir=tfds_dir, tokenizer=ByteTokenizer())


# --- batches ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 65, size=50_000).astype(np.uint16)


def test_batches_are_a_pure_function_of_the_step(tokens):
    a = TokenBatcher(tokens, batch_size=8, block_size=16, seed=3).batches(0, 10)
    b = TokenBatcher(tokens, batch_size=8, block_size=16, seed=3).batches(0, 10)
    for key in ("inputs", "targets"):
        assert a[key].shape == (10, 8, 16) and a[key].dtype == np.int32
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["inputs"][0], a["inputs"][1])  # steps differ
    other_seed = TokenBatcher(tokens, 8, 16, seed=4).batches(0, 1)
    other_salt = TokenBatcher(tokens, 8, 16, seed=3, salt="validation").batches(0, 1)
    assert not np.array_equal(a["inputs"][0], other_seed["inputs"][0])
    assert not np.array_equal(a["inputs"][0], other_salt["inputs"][0])


def test_resume_sees_the_same_batches(tokens):
    batcher = TokenBatcher(tokens, batch_size=8, block_size=16, seed=3)
    whole = batcher.batches(0, 10)
    first, rest = batcher.batches(0, 5), batcher.batches(5, 5)
    resumed = TokenBatcher(tokens, batch_size=8, block_size=16, seed=3).batches(5, 5)
    for key in ("inputs", "targets"):
        np.testing.assert_array_equal(whole[key], np.concatenate([first[key], rest[key]]))
        np.testing.assert_array_equal(whole[key][5:], resumed[key])
        np.testing.assert_array_equal(whole[key][7], batcher.batch(7)[key])


def test_targets_are_inputs_shifted_by_one(tokens):
    batcher = TokenBatcher(tokens, batch_size=16, block_size=32, seed=0)
    out = batcher.batches(2, 3)
    np.testing.assert_array_equal(out["inputs"][..., 1:], out["targets"][..., :-1])
    for k in range(3):
        for row, start in enumerate(batcher.offsets(2 + k)):
            np.testing.assert_array_equal(out["inputs"][k, row], tokens[start : start + 32])
            np.testing.assert_array_equal(out["targets"][k, row], tokens[start + 1 : start + 33])


def test_offsets_cover_the_valid_range():
    # 3 tokens, block 2: only start 0 is valid (inputs [0,1], targets [1,2]).
    out = TokenBatcher(np.array([5, 6, 7], np.int32), batch_size=4, block_size=2, seed=0).batches(0, 2)
    assert (out["inputs"] == [5, 6]).all() and (out["targets"] == [6, 7]).all()
    starts = np.concatenate([TokenBatcher(np.arange(20), 64, 4, seed=1).offsets(s) for s in range(20)])
    assert starts.min() == 0 and starts.max() == 20 - 4 - 1


def test_process_slices_cover_the_global_batch(tokens):
    batcher = TokenBatcher(tokens, batch_size=12, block_size=8, seed=1)
    whole = batcher.batches(4, 3)
    parts = [batcher.batches(4, 3, process_index=p, process_count=4) for p in range(4)]
    for key in ("inputs", "targets"):
        assert parts[0][key].shape == (3, 3, 8)
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts], axis=1), whole[key])


def test_batcher_errors(tokens):
    with pytest.raises(ValueError, match="not divisible by process_count 5"):
        TokenBatcher(tokens, batch_size=12, block_size=8, seed=0).batches(0, 1, process_index=0, process_count=5)
    with pytest.raises(ValueError, match=r"too short for block_size=8.*at least .* 9 tokens") as e:
        TokenBatcher(np.arange(8), batch_size=2, block_size=8, seed=0)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="process_index"):
        TokenBatcher(tokens, 4, 8, seed=0).batches(0, 1, process_index=2, process_count=2)


def test_eval_batches_are_fixed(tokens):
    a = eval_batches(tokens, batch_size=8, block_size=16, num_batches=4, seed=0)
    b = eval_batches(tokens, batch_size=8, block_size=16, num_batches=4, seed=0)
    assert a["inputs"].shape == (4, 8, 16)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    train = TokenBatcher(tokens, 8, 16, seed=0).batches(0, 4)
    assert not np.array_equal(a["inputs"], train["inputs"])


def test_batch_generation_benchmark_prints_its_figures(capsys):
    """The speed of TokenBatcher is a benchmark (benchmarks/batch_generation.py), not a wall-clock
    threshold here: this only checks that it runs and reports positive, consistent figures."""
    from benchmarks import batch_generation

    assert batch_generation.main(["--quick", "--repeats=1"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, batch_size, block_size, steps = batch_generation.CASES["quick"]
    assert row["bench"] == "batch_generation" and row["steps_per_call"] == steps
    assert (row["batch_size"], row["block_size"]) == (batch_size, block_size)
    assert row["ms_per_step"] > 0
    assert row["tokens_per_sec"] == pytest.approx(batch_size * block_size / (row["ms_per_step"] / 1e3))
    assert batch_generation.main(["--steps=0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err
