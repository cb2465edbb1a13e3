"""Byte-level BPE and SentencePiece tokenizers: exact round trips (English and real Chinese from
shared/data), GPT-2 file loading, workdir save/load, and the one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from optional_deps import require

from gpt_jax.data import build_tokenizer, load_tokenizer, prepare_tokens, resolve_manual_dir
from gpt_jax.data.tokenizers import ENDOFTEXT, BPETokenizer, Tokenizer
from gpt_jax.data.tokenizers.bpe import _safe_chunks

# Text no training corpus here covers: emoji, accents, NBSP, CRLF, U+2028, tabs, the special token.
ODD_TEXT = "Hello  world\r\n\tcafé\u00a0naïve 😀🇨🇳 a\u2028b \x00 <|endoftext|> end \n\n  \n"


@pytest.fixture(scope="module")
def shakespeare_text() -> str:
    try:
        base = resolve_manual_dir(None, dataset="tiny_shakespeare")
    except FileNotFoundError as e:
        pytest.fail(str(e))
    return (base / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def song_ci() -> tuple[str, str]:
    """(train, held-out) Chinese text: the first 2000 ci and the next 200, as the data layer joins them."""
    try:
        base = resolve_manual_dir(None, dataset="song_ci")
    except FileNotFoundError as e:
        pytest.fail(str(e))
    poems = []
    with open(base / "chinese_poetry" / "song_ci.jsonl", encoding="utf-8") as f:
        for line, _ in zip(f, range(2200)):
            poems.append("\n".join(json.loads(line)["paragraphs"]))
    return "\n\n".join(poems[:2000]) + "\n", "\n\n".join(poems[2000:]) + "\n"


@pytest.fixture(scope="module")
def bpe(shakespeare_text) -> BPETokenizer:
    return build_tokenizer("bpe", shakespeare_text[:300_000], vocab_size=512)


def test_bpe_trains_to_the_asked_vocab_with_endoftext_last(bpe, shakespeare_text):
    assert isinstance(bpe, Tokenizer) and bpe.name == "bpe"
    assert bpe.vocab_size == 512 and bpe.eos_id == 511  # as GPT-2's 50256: the last id
    assert bpe.decode([bpe.eos_id]) == ENDOFTEXT
    assert build_tokenizer("char", "ab").eos_id is None and build_tokenizer("byte", "").eos_id is None
    ids = bpe.encode(shakespeare_text[300_000:400_000])
    assert ids.dtype == np.int32 and ids.ndim == 1 and ids.min() >= 0 and ids.max() < 512
    assert len(ids) < 100_000 / 1.7  # it compresses: ~1.9 characters per token at 512 ids


def test_bpe_round_trips_exactly(bpe, shakespeare_text):
    for text in (shakespeare_text[-50_000:], ODD_TEXT, "", " ", "\n"):
        assert bpe.decode(bpe.encode(text)) == text
    assert bpe.encode(ENDOFTEXT).tolist() == [bpe.eos_id]  # one id in text too, as HF's GPT-2
    assert bpe.decode(bpe.encode("😀")[:1]) == "\ufffd"  # a cut multi-byte char decodes, never raises


def test_bpe_chunked_encoding_equals_whole_text(bpe, shakespeare_text):
    text = shakespeare_text[:120_000] + "x\n \ny\n\nz \n"
    assert len(_safe_chunks(text, size=1000)) > 50 and "".join(_safe_chunks(text, 1000)) == text
    whole = bpe.hf.encode(text, add_special_tokens=False).ids
    assert bpe._splittable  # GPT-2's pipeline: encode() takes the chunked path
    np.testing.assert_array_equal(bpe.encode(text), whole)


def test_bpe_round_trips_chinese_poetry(song_ci):
    train, held_out = song_ci
    assert sum("\u4e00" <= c <= "\u9fff" for c in held_out) > 10_000
    tok = build_tokenizer("bpe", train, vocab_size=1024)
    for text in (held_out, train[:20_000], "宋词：" + ODD_TEXT + "。"):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
    assert len(tok.encode(held_out)) < len(held_out.encode("utf-8")) / 2  # merges across CJK bytes


def test_bpe_training_is_deterministic(shakespeare_text):
    a = build_tokenizer("bpe", shakespeare_text[:100_000], vocab_size=400)
    b = build_tokenizer("bpe", shakespeare_text[:100_000], vocab_size=400)
    assert a.hf.to_str() == b.hf.to_str()


def test_bpe_workdir_tokenizer_json_is_self_contained(bpe, tmp_path, shakespeare_text):
    bpe.save(tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["tokenizer.json"]
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text(encoding="utf-8"))
    assert (
        saved["kind"] == "bpe" and saved["eos_token"] == ENDOFTEXT and saved["hf_tokenizer"]["model"]["type"] == "BPE"
    )
    loaded = load_tokenizer(tmp_path / "run")
    assert type(loaded) is BPETokenizer and (loaded.vocab_size, loaded.eos_id) == (512, 511)
    sample = shakespeare_text[-20_000:] + ODD_TEXT
    np.testing.assert_array_equal(loaded.encode(sample), bpe.encode(sample))


@pytest.mark.parametrize("layout", ["dir", "vocab_merges", "tokenizer_json", "merges_file", "workdir"])
def test_bpe_loads_gpt2_style_files(bpe, tmp_path, layout):
    hf_dir = tmp_path / "hf"
    bpe.save_pretrained(hf_dir)
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= {p.name for p in hf_dir.iterdir()}
    vocab = json.loads((hf_dir / "vocab.json").read_text(encoding="utf-8"))
    assert vocab[ENDOFTEXT] == 511 and len(vocab) == 512  # GPT-2's vocab.json lists it too
    path = {
        "dir": hf_dir,
        "tokenizer_json": hf_dir / "tokenizer.json",
        "merges_file": hf_dir / "merges.txt",
        "vocab_merges": hf_dir,
        "workdir": tmp_path / "run",
    }[layout]
    if layout == "vocab_merges":  # GPT-2's original pair of files only
        (hf_dir / "tokenizer.json").unlink()
        (hf_dir / "tokenizer_config.json").unlink()
    if layout == "workdir":
        bpe.save(path)
    tok = build_tokenizer("bpe", "ignored: the files bring the vocabulary", path=path)
    assert (tok.vocab_size, tok.eos_id) == (512, 511) and tok._splittable
    np.testing.assert_array_equal(tok.encode(ODD_TEXT * 3), bpe.encode(ODD_TEXT * 3))


def test_bpe_file_errors_name_the_file(bpe, tmp_path):
    hf_dir = tmp_path / "hf"
    bpe.save_pretrained(hf_dir)
    (hf_dir / "tokenizer.json").unlink()
    merges = (hf_dir / "merges.txt").read_text(encoding="utf-8")

    def error(exc=ValueError, path=hf_dir) -> str:
        with pytest.raises(exc) as e:
            BPETokenizer.from_pretrained(path)
        assert "\n" not in str(e.value)
        return str(e.value)

    (hf_dir / "merges.txt").write_text(merges + "Ġzzq Ġ\n", encoding="utf-8")  # not in vocab.json
    n = len(merges.rstrip("\n").split("\n")) + 1
    assert f"merges.txt line {n}" in error() and "'Ġzzq'" in error() and "same tokenizer" in error()
    (hf_dir / "merges.txt").write_text(merges + "abc\n", encoding="utf-8")
    assert "merges.txt line" in error() and "two tokens" in error()
    (hf_dir / "merges.txt").unlink()
    assert "merges.txt not found" in error(FileNotFoundError)
    (hf_dir / "merges.txt").write_text(merges, encoding="utf-8")
    (hf_dir / "vocab.json").write_text('{"a": 0, "b": ', encoding="utf-8")  # truncated
    assert "vocab.json is not valid UTF-8 JSON" in error()
    (hf_dir / "vocab.json").write_text('{"a": 0, "b": 1, "ab": 2}', encoding="utf-8")
    assert "vocab.json" in error() and "merge" in error()  # merges use tokens this vocab lacks
    (hf_dir / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    assert "lacks 254 of the 256 byte symbols" in error()
    (hf_dir / "vocab.json").unlink()
    assert "vocab.json not found" in error(FileNotFoundError)
    (hf_dir / "merges.txt").unlink()
    assert "no tokenizer.json and no vocab.json + merges.txt" in error(FileNotFoundError)
    (hf_dir / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    assert "model type 'WordPiece' is not BPE" in error()
    bad = json.loads(bpe.hf.to_str())
    bad["model"]["merges"].append(["Ġzzq", "Ġ"])
    (hf_dir / "tokenizer.json").write_text(json.dumps(bad))
    assert "tokenizer.json model.merges line" in error() and "'Ġzzq'" in error()


def test_tokenizer_option_errors(shakespeare_text, tmp_path):
    with pytest.raises(ValueError, match=r"needs data.vocab_size"):
        build_tokenizer("bpe", "text")
    with pytest.raises(ValueError, match=r"at least 257"):
        build_tokenizer("bpe", "text", vocab_size=100)
    with pytest.raises(ValueError, match=r"data.vocab_size=300 is for learned vocabularies"):
        build_tokenizer("char", "text", vocab_size=300)
    with pytest.raises(ValueError, match=r"char tokenizer has no files"):
        build_tokenizer("char", "text", path=tmp_path)
    with pytest.raises(ValueError, match=r"both set"):
        build_tokenizer("bpe", "text", vocab_size=300, path=tmp_path)
    with pytest.raises(ValueError, match="Unknown tokenizer kind 'wordpiece'"):
        build_tokenizer("wordpiece", "text")
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(ValueError, match=r"an HF tokenizer.json: load it with data.tokenizer_path"):
        load_tokenizer(tmp_path)


def test_prepare_tokens_trains_bpe_on_the_train_split_only(tfds_cache, shakespeare_text):
    tok, tokens = prepare_tokens("tiny_shakespeare", "bpe", data_dir=tfds_cache, vocab_size=320)
    assert tok.vocab_size == 320
    n_train = int(len(shakespeare_text) * 0.9)
    assert tok.decode(tokens["train"]) == shakespeare_text[:n_train]
    assert tok.decode(tokens["validation"]) == shakespeare_text[n_train:]
    same = build_tokenizer("bpe", shakespeare_text[:n_train], vocab_size=320)
    assert same.hf.to_str() == tok.hf.to_str()


# --- SentencePiece (optional extra; installed by .[dev], so CI runs these) ---------------------


def test_sentencepiece_round_trips_english_and_chinese(shakespeare_text, song_ci, tmp_path):
    require("sentencepiece")
    train, held_out = song_ci
    en = build_tokenizer("sentencepiece", shakespeare_text[:200_000], vocab_size=500)
    zh = build_tokenizer("sentencepiece", train, vocab_size=4500)
    assert en.vocab_size == 500 and en.eos_id is not None
    for tok, text in ((en, shakespeare_text[-30_000:]), (zh, held_out), (en, held_out), (zh, ODD_TEXT)):
        assert tok.decode(tok.encode(text)) == text
    zh.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    np.testing.assert_array_equal(loaded.encode(held_out), zh.encode(held_out))
    with pytest.raises(ValueError, match=r"data.vocab_size=300 is smaller than the \d+ characters"):
        build_tokenizer("sentencepiece", train, vocab_size=300)


def test_optional_deps_skip_locally_but_fail_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require("gpt_jax_no_such_module")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but gpt_jax_no_such_module is not importable"):
        require("gpt_jax_no_such_module")
