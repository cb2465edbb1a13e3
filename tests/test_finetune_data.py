"""Fine-tuning data: SST-2 through the TFDS layer, SFT JSONL -> rendered ids + loss mask -> packed
batches, and the classification report. Real files from shared/data, TFDS cache in tmp, no network."""

from __future__ import annotations

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gpt_jax import masks
from gpt_jax.analysis.classification_report import classification_report, format_report
from gpt_jax.chat import ChatTemplate
from gpt_jax.config import ModelConfig
from gpt_jax.data import labelled, load_text_splits, sft, sources, text_builder
from gpt_jax.data.labelled import encode_labelled, load_labelled
from gpt_jax.data.tokenizers import ByteTokenizer, build_tokenizer
from gpt_jax.model import GPT

# From shared/data/sst2/PROVENANCE.md.
SST2_ROWS = {"train": 67_349, "validation": 872, "test": 1_821}
SST2_LABEL_COUNTS = {"train": [29_780, 37_569], "validation": [428, 444], "test": [912, 909]}


@pytest.fixture(scope="session")
def manual_dir() -> pathlib.Path:
    try:
        return sources.require_manual_files("sst2", labelled.LABELLED["sst2"].files.values())
    except FileNotFoundError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def sst2_tfds(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("tfds_sst2")


@pytest.fixture(scope="session")
def sst2(manual_dir, sst2_tfds):
    return load_labelled("sst2", data_dir=sst2_tfds)


def _fake_sst2(root: pathlib.Path, dev_rows: str = "0\tbad movie .\n1\tgood movie .\n") -> pathlib.Path:
    (root / "sst2").mkdir(parents=True)
    (root / "sst2" / "train.tsv").write_text('label\tsentence\n1\ta "quoted" gem\n0\tdull\n1\tfine\n', encoding="utf-8")
    (root / "sst2" / "dev.tsv").write_text("label\tcontent\n" + dev_rows, encoding="utf-8")
    (root / "sst2" / "test.tsv").write_text("label\tcontent\n0\tmeh\n", encoding="utf-8")
    return root


# --- labelled data ------------------------------------------------------------------------------


def test_sst2_counts_balance_and_order(sst2, manual_dir):
    splits, names = sst2
    assert names == ["negative", "positive"]
    assert {s: len(t) for s, (t, _) in splits.items()} == SST2_ROWS
    for split, (texts, labels) in splits.items():
        assert labels.dtype == np.int32 and labels.shape == (len(texts),)
        assert np.bincount(labels).tolist() == SST2_LABEL_COUNTS[split]
    # File order kept (rows were stored shuffled, in blocks).
    assert splits["train"][0][:2] == [
        "hide new secretions from the parental units",
        "contains no wit , only labored gags",
    ]
    assert splits["validation"][0][0] == "one long string of cliches ."
    last = (manual_dir / "sst2" / "test.tsv").read_text(encoding="utf-8").rstrip("\n").rsplit("\n", 1)[1]
    assert last == f"{splits['test'][1][-1]}\t{splits['test'][0][-1]}"


def test_sst2_second_load_reuses_cache(sst2, sst2_tfds, monkeypatch):
    def no_generation(self, rows):
        raise AssertionError("prepared again although the cache is valid")

    monkeypatch.setattr(labelled.GptJaxLabelled, "_generate_examples", no_generation)
    again, _ = load_labelled("sst2", data_dir=sst2_tfds)
    assert again["validation"][0] == sst2[0]["validation"][0]
    np.testing.assert_array_equal(again["train"][1], sst2[0]["train"][1])


def test_fake_sst2_round_trips_and_keeps_quotes(tmp_path, monkeypatch):
    root = _fake_sst2(tmp_path / "data")
    monkeypatch.setenv(sources.MANUAL_DIR_ENV, str(root))  # found like the real data: via the env var
    splits, _ = load_labelled("sst2", data_dir=tmp_path / "tfds")
    assert splits["train"][0] == ['a "quoted" gem', "dull", "fine"]
    assert splits["train"][1].tolist() == [1, 0, 1]
    assert splits["validation"][0] == ["bad movie .", "good movie ."]


def test_bad_label_names_file_line_and_label_map(tmp_path):
    root = _fake_sst2(tmp_path / "data", dev_rows="0\tok\n2\tneither\n")
    with pytest.raises(ValueError) as e:
        load_labelled("sst2", manual_dir=root, data_dir=tmp_path / "tfds")
    msg = str(e.value)
    assert f"{root / 'sst2' / 'dev.tsv'}:3:" in msg and "'2'" in msg
    assert "{'0': 'negative', '1': 'positive'}" in msg and "\n" not in msg


def test_wrong_field_count_and_missing_file(tmp_path):
    root = _fake_sst2(tmp_path / "data", dev_rows="0\tok\textra\n")
    with pytest.raises(ValueError, match=r"dev\.tsv:2: expected 2 tab-separated fields, got 3"):
        load_labelled("sst2", manual_dir=root, data_dir=tmp_path / "tfds")
    (root / "sst2" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.tsv.*config\.data\.manual_dir"):
        load_labelled("sst2", manual_dir=root, data_dir=tmp_path / "tfds")
    with pytest.raises(ValueError, match="Unknown labelled dataset 'imdb'.*sst2"):
        load_labelled("imdb", data_dir=tmp_path / "tfds")


def test_sst2_text_is_train_sentences_only(sst2, manual_dir, tmp_path):
    corpus = text_builder.CORPORA["sst2_text"]
    full = corpus.reader(manual_dir / corpus.relative_path)
    assert full == "".join(t + "\n" for t in sst2[0]["train"][0])
    # Through the TFDS text builder, on a fake copy (the real one is covered by test_data.py).
    root = _fake_sst2(tmp_path / "data")
    splits = load_text_splits("sst2_text", manual_dir=root, data_dir=tmp_path / "tfds")
    text = 'a "quoted" gem\ndull\nfine\n'
    n_train = text_builder.split_point(len(text))
    assert splits == {"train": text[:n_train], "validation": text[n_train:]}


def test_encode_labelled_truncates_and_pads():
    tok = ByteTokenizer()
    batch = encode_labelled(tok, ["ab", "abcdef", "x"], [1, 0, 1], max_len=4)
    assert {k: v.dtype for k, v in batch.items()} == {"inputs": np.int32, "lengths": np.int32, "labels": np.int32}
    np.testing.assert_array_equal(batch["inputs"], [[97, 98, 0, 0], [97, 98, 99, 100], [120, 0, 0, 0]])
    np.testing.assert_array_equal(batch["lengths"], [2, 4, 1])  # the FIRST max_len tokens are kept
    np.testing.assert_array_equal(batch["labels"], [1, 0, 1])
    with pytest.raises(ValueError, match="text 1 .* encodes to no tokens"):
        encode_labelled(tok, ["a", ""], [0, 1], max_len=4)
    with pytest.raises(ValueError, match="one label per text"):
        encode_labelled(tok, ["a", "b"], [0], max_len=4)


# --- SFT: reading and row formats ---------------------------------------------------------------


def test_read_jsonl_skips_blanks_and_names_bad_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n', encoding="utf-8")
    assert sft.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n\n{"a": 2,\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path}:3: invalid JSON \(") as e:
        sft.read_jsonl(path)
    assert "\n" not in str(e.value)
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:2: expected a JSON object"):
        sft.read_jsonl(path)


def test_row_formats():
    assert sft.to_conversation({"instruction": "Sum.", "input": "1 2", "output": "3"}) == ("", [("Sum.\n\n1 2", "3")])
    assert sft.to_conversation({"instruction": "Hi.", "input": "", "output": "Hello."}) == ("", [("Hi.", "Hello.")])
    seed = {"instruction": "Add.", "instances": [{"input": "1 1", "output": "2"}, {"input": "", "output": "?"}]}
    assert sft.conversations(seed) == [("", [("Add.\n\n1 1", "2")]), ("", [("Add.", "?")])]
    with pytest.raises(ValueError, match="2 conversations .* use conversations"):
        sft.to_conversation(seed)
    share = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Q1"},
            {"from": "gpt", "value": "A1"},
            {"from": "human", "value": "Q2"},
            {"from": "function_call", "value": '{"name": "f"}'},
            {"from": "observation", "value": '{"r": 1}'},
            {"from": "gpt", "value": "A2"},
        ],
        "tools": "[]",
    }
    assert sft.to_conversation(share) == ("Be brief.", [("Q1", "A1"), ("Q2", '{"name": "f"}'), ('{"r": 1}', "A2")])
    share["tools"] = '[{"name": "f"}]'
    assert sft.to_conversation(share)[0] == 'Be brief.\n\nTools: [{"name": "f"}]'
    msgs = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    assert sft.to_conversation(msgs) == ("", [("u", "a")])


def test_row_errors_name_line_and_expected_keys():
    with pytest.raises(
        ValueError, match=r"^f\.jsonl:7: row has keys \['prompt'\]; expected Alpaca \{instruction, input, output\}"
    ):
        sft.to_conversation({"prompt": "x"}, "f.jsonl:7")
    bad_turns = {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}
    with pytest.raises(ValueError, match="f.jsonl:2: message 1 has from='human' out of turn"):
        sft.conversations(bad_turns, "f.jsonl:2")
    with pytest.raises(ValueError, match="last user message has no assistant reply"):
        sft.conversations({"conversations": [{"from": "human", "value": "a"}]})


def test_load_sft_known_files_split_by_row(manual_dir, tmp_path):
    # Rows after dropping exact duplicates (alpaca_en 999 - 14, alpaca_zh 1000 - 8, glaive 300 - 35).
    rows = {"alpaca_seed_tasks": 175, "alpaca_en_demo": 985, "alpaca_zh_demo": 992, "glaive_toolcall_en_demo": 265}
    for name, n in rows.items():
        splits = sft.load_sft(name)
        assert len(splits["train"]) + len(splits["validation"]) == n  # every row here is one conversation
        assert len(splits["validation"]) == int(np.ceil(0.1 * n))
        assert sft.load_sft(name) == splits  # deterministic
    assert sum(len(v) for v in sft.load_sft("alpaca_en_demo", dedupe=False).values()) == 999
    splits = sft.load_sft("alpaca_en_demo", seed=1)
    assert splits["validation"] != sft.load_sft("alpaca_en_demo")["validation"]
    assert not {c[1][0] for c in splits["train"]} & {c[1][0] for c in splits["validation"]}
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        sft.load_sft(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"text": "c"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{bad}:2: row has keys \['text'\]"):
        sft.load_sft(bad)


# --- SFT: rendering and the loss mask -----------------------------------------------------------

CONV = ("You are terse.", [("Hi? ünïcode", "Hello!\nTwo lines."), ("2+2", "4")])


@pytest.mark.parametrize("template_name", ["plain", "chatml"])
def test_loss_mask_covers_exactly_the_replies(template_name):
    template = ChatTemplate.named(template_name)
    system, turns = CONV
    full = template.render(system, turns[:-1], turns[-1][0]) + turns[-1][1] + template.end
    tokenizers = [ByteTokenizer(), build_tokenizer("char", full)]
    for tok in tokenizers:
        ids, mask = sft.render(template, tok, system, turns)
        assert ids.dtype == np.int32 and mask.dtype == np.float32 and ids.shape == mask.shape
        assert set(np.unique(mask)) == {0.0, 1.0}
        assert tok.decode(ids) == full
        assert tok.decode(ids[mask == 1]) == "".join(a + template.end for _, a in turns)
        prompts = full
        for _, a in turns:
            prompts = prompts.replace(a + template.end, "", 1)
        assert tok.decode(ids[mask == 0]) == prompts


def test_render_real_rows_round_trip(manual_dir):
    tok, template = ByteTokenizer(), ChatTemplate.named("chatml")
    for name in ("alpaca_zh_demo", "glaive_toolcall_en_demo"):
        for system, turns in sft.load_sft(name)["validation"][:5]:
            ids, mask = sft.render(template, tok, system, turns)
            assert tok.decode(ids) == "".join(t for t, _ in sft.render_segments(template, system, turns))
            assert tok.decode(ids[mask == 1]) == "".join(a + template.end for _, a in turns)


# --- packing ------------------------------------------------------------------------------------


def _examples(n: int, seed: int = 0, max_len: int = 20) -> list[sft.Example]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = int(rng.integers(2, max_len))
        out.append((rng.integers(1, 256, t).astype(np.int32), (rng.random(t) < 0.6).astype(np.float32)))
    return out


def test_first_fit():
    assert sft.first_fit([5, 5, 3, 2, 8, 1], 10) == [[0, 1], [2, 3, 5], [4]]
    with pytest.raises(ValueError, match="exceeds the row capacity"):
        sft.first_fit([11], 10)


def test_pack_never_mixes_examples():
    length = 24
    examples = _examples(40)
    batch = sft.pack(examples, length)
    assert {k: (v.dtype, v.shape[1]) for k, v in batch.items()} == {
        "inputs": (np.int32, length),
        "targets": (np.int32, length),
        "weights": (np.float32, length),
        "segment_ids": (np.int32, length),
        "positions": (np.int32, length),
    }
    rows = sft.first_fit([len(ids) - 1 for ids, _ in examples], length)
    assert len(rows) == batch["inputs"].shape[0] < len(examples)
    for r, members in enumerate(rows):
        seg = batch["segment_ids"][r]
        assert seg.max() == len(members) and np.all(np.diff(seg[seg > 0]) >= 0)
        for s, i in enumerate(members, start=1):
            ids, mask = examples[i]
            at = seg == s
            np.testing.assert_array_equal(batch["inputs"][r][at], ids[:-1])
            np.testing.assert_array_equal(batch["targets"][r][at], ids[1:])  # never the next example's token
            np.testing.assert_array_equal(batch["weights"][r][at], mask[1:])
            np.testing.assert_array_equal(batch["positions"][r][at], np.arange(len(ids) - 1))
        pad = seg == 0
        assert not batch["weights"][r][pad].any() and not batch["inputs"][r][pad].any()
        assert np.all(np.flatnonzero(pad) >= np.flatnonzero(~pad).max())  # padding at the end only
    assert batch["weights"].sum() == sum(m[1:].sum() for _, m in examples)


def test_truncation_is_counted_and_logged(caplog):
    ids = np.arange(1, 31, dtype=np.int32)
    long_ex = (ids, np.r_[np.zeros(20), np.ones(10)].astype(np.float32))
    with caplog.at_level(logging.WARNING, logger="gpt_jax.data.sft"):
        batch = sft.unpacked([long_ex, _examples(1)[0]], 16)
    assert "1 of 2 SFT examples are longer than 17 tokens" in caplog.text
    assert "1 of them kept no trained token" in caplog.text
    np.testing.assert_array_equal(batch["inputs"][0], ids[:16])
    np.testing.assert_array_equal(batch["targets"][0], ids[1:17])  # first L + 1 tokens kept
    assert batch["weights"][0].sum() == 0


def _segment_losses(batch, rows_of_examples, losses_BxL):
    """{example index: its per-token losses} from the rows' segment ids."""
    out = {}
    for r, members in enumerate(rows_of_examples):
        for s, i in enumerate(members, start=1):
            out[i] = losses_BxL[r][batch["segment_ids"][r] == s]
    return out


def test_packed_and_unpacked_losses_match():
    length = 32
    cfg = ModelConfig(vocab_size=256, block_size=length, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg)
    # Random params of the right shapes without compiling init (XLA compiles are the slow part here).
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32))["params"])
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), shapes)

    examples = _examples(24, seed=1, max_len=length)
    rows = sft.first_fit([len(ids) - 1 for ids, _ in examples], length)
    packed, alone = sft.pack(examples, length), sft.unpacked(examples, length)
    assert max(len(m) for m in rows) >= 3  # the test does pack several examples per row

    @jax.jit
    def token_losses(params, batch):
        logits_BxLxV = model.apply(
            {"params": params},
            batch["inputs"],
            positions_BxL=batch["positions"],
            mask_BxLxS=masks.attention_mask(batch, length),
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, batch["targets"]) * batch["weights"]

    # Control: the packed rows with one segment id for all, i.e. a plain causal mask across examples.
    leaky = dict(packed, segment_ids=np.ones_like(packed["segment_ids"]))
    # All three layouts in one call (one compile).
    both = {k: jnp.asarray(np.concatenate([packed[k], alone[k], leaky[k]])) for k in packed}
    losses_BxL = np.asarray(token_losses(params, both))
    n, m = len(rows), len(examples)
    by_packed = _segment_losses(packed, rows, losses_BxL[:n])
    by_alone = _segment_losses(alone, [[i] for i in range(m)], losses_BxL[n : n + m])
    by_leaky = _segment_losses(packed, rows, losses_BxL[n + m :])
    later = [i for members in rows for i in members[1:]]  # examples not first in their row
    assert all(np.abs(by_leaky[i] - by_alone[i]).max() > 1e-3 for i in later)  # the test can fail
    assert sorted(by_packed) == sorted(by_alone) == list(range(len(examples)))
    for i, (ids, mask) in enumerate(examples):
        assert by_packed[i].shape == (len(ids) - 1,) and (by_alone[i] > 0).sum() == (mask[1:] > 0).sum()
        np.testing.assert_allclose(by_packed[i], by_alone[i], atol=1e-5)
        assert abs(by_packed[i].sum() - by_alone[i].sum()) <= 1e-5 * max(1.0, abs(by_alone[i].sum()))


# --- classification report ----------------------------------------------------------------------


def test_report_three_classes_by_hand():
    r = classification_report([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 1], ["neg", "pos", "neu"])
    assert r["n"] == 6 and r["accuracy"] == pytest.approx(3 / 6)
    assert r["confusion"] == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]
    assert r["per_class"]["neg"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert r["per_class"]["pos"] == pytest.approx({"precision": 2 / 4, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert r["per_class"]["neu"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # never predicted
    assert r["macro_precision"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert r["macro_recall"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert r["macro_f1"] == pytest.approx((0.5 + 4 / 7) / 3)
    assert r["weighted_f1"] == pytest.approx((2 * 0.5 + 3 * 4 / 7) / 6)
    json.dumps(r)  # plain Python types
    text = format_report(r)
    assert "accuracy" in text and "macro avg" in text and "weighted avg" in text
    assert "     pos    0.5000    0.6667    0.5714         3" in text
    assert "    accuracy                        0.5000         6" in text
    assert text.splitlines()[-5:] == [
        "confusion matrix (rows = true, cols = predicted):",
        "                neg    pos    neu",
        "         neg      1      1      0",
        "         pos      1      2      0",
        "         neu      0      1      0",
    ]


def test_report_binary_and_errors():
    r = classification_report(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), ["negative", "positive"])
    assert r["per_class"]["positive"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert r["per_class"]["negative"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert r["accuracy"] == 0.75 and r["confusion"] == [[2, 0], [1, 1]]
    empty = classification_report([], [], ["a", "b"])
    assert empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0 and empty["n"] == 0
    with pytest.raises(ValueError, match="one prediction per example"):
        classification_report([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        classification_report([0, 2], [0, 1], ["a", "b"])
