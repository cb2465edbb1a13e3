"""Token shards + the grain reader: documents streamed, records round-trip, packing keeps documents
apart, a stream's state resumes it exactly (in-process and with worker processes)."""

from __future__ import annotations

import gzip
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax.data import documents, grain_pipeline, shards, sources
from gpt_jax.data.tokenizers import build_tokenizer

EOS = 255


def _docs(n: int, seed: int = 0, max_len: int = 90) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, EOS, size=rng.integers(1, max_len)).astype(np.int32) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(meta, train docs): 300 train docs of 1..89 tokens (some longer than a block), 40 validation."""
    train, val = _docs(300, 0), _docs(40, 1)
    meta = shards.prepare_shards(
        tmp_path_factory.mktemp("shards") / "c",
        {"train": iter(train), "validation": iter(val)},
        vocab_size=256,
        eos_id=EOS,
        records_per_shard=64,  # several shard files
        max_record_tokens=64,  # long documents become several records
    )
    return meta, train


def _cfg(**kw) -> grain_pipeline.StreamConfig:
    return grain_pipeline.StreamConfig(**{"batch_size": 4, "block_size": 16, "seed": 3, "packing_bins": 8, **kw})


def test_shards_round_trip_and_reuse(corpus, tmp_path):
    meta, train = corpus
    assert meta.dtype == "uint16" and len(meta.splits["train"]["shards"]) > 1
    assert meta.splits["train"]["tokens"] == sum(d.size + 1 for d in train)  # + EOS after each
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    source = ArrayRecordDataSource(meta.paths("train"))
    got = np.concatenate([shards.decode_record(source[i], meta.dtype) for i in range(len(source))])
    np.testing.assert_array_equal(got, np.concatenate([np.append(d, EOS) for d in train]))  # in order
    # A complete corpus is reused, never rewritten; a failed write leaves nothing that looks complete.
    again = shards.prepare_shards(meta.directory, {"train": iter(())}, vocab_size=256, eos_id=EOS)
    assert again == meta
    with pytest.raises(ValueError, match="no documents"):
        shards.prepare_shards(tmp_path / "empty", {"train": iter(())}, vocab_size=256, eos_id=EOS)
    assert not any(tmp_path.iterdir())


def test_packed_rows_keep_documents_apart(corpus):
    meta, train = corpus
    stream = grain_pipeline.PackedStream(meta, _cfg())
    b = stream.batches(0, 30)
    inputs, targets, seg, pos, w = (b[k] for k in ("inputs", "targets", "segment_ids", "positions", "weights"))
    assert inputs.shape == (30, 4, 16) and inputs.dtype == np.int32 and w.dtype == np.float32
    np.testing.assert_array_equal(w, (seg > 0).astype(np.float32))
    rows = [(i, t, s, p) for i, t, s, p in zip(*(x.reshape(-1, 16) for x in (inputs, targets, seg, pos)))]
    pieces = []
    for i_L, t_L, s_L, p_L in rows:
        for sid in set(s_L[s_L > 0].tolist()):
            at = np.flatnonzero(s_L == sid)
            assert np.array_equal(at, np.arange(at[0], at[0] + at.size))  # contiguous
            assert np.array_equal(p_L[at], np.arange(at.size))  # positions restart per piece
            np.testing.assert_array_equal(i_L[at][1:], t_L[at][:-1])  # targets = inputs shifted, within the piece
            pieces.append((i_L[at], t_L[at]))
    # Every piece is a stretch of one document and its EOS.
    text = {tuple(np.append(d, EOS).tolist()) for d in train}
    for inp, tgt in pieces[:50]:
        seq = tuple(np.append(inp, tgt[-1]).tolist())
        assert any(_contains(doc, seq) for doc in text), seq


def _contains(doc: tuple, seq: tuple) -> bool:
    return any(doc[i : i + len(seq)] == seq for i in range(len(doc) - len(seq) + 1))


def test_segment_ids_stop_attention_across_documents():
    """The model sees `segment_ids`/`positions`: a token's logits ignore other documents in its row."""
    from gpt_jax.config import ModelConfig
    from gpt_jax.objectives.loss import lm_loss
    from gpt_jax.tasks.lm_state import lm_init

    cfg = ModelConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16)
    params, _ = jax.jit(lm_init(cfg))(jax.random.key(0))
    seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]])
    batch = {
        "inputs": jnp.array([[5, 6, 7, 8, 9, 10, 11, 0]]),
        "targets": jnp.array([[6, 7, 8, 9, 10, 11, 12, 0]]),
        "segment_ids": seg,
        "positions": jnp.array([[0, 1, 2, 0, 1, 2, 3, 0]]),
        "weights": (seg > 0).astype(jnp.float32),
    }
    loss = jax.jit(lm_loss(cfg), static_argnums=3)
    changed = {**batch, "inputs": batch["inputs"].at[0, :3].set(jnp.array([1, 2, 3]))}
    # Only document 2 counts: changing document 1 must not move it.
    only2 = {"weights": (seg == 2).astype(jnp.float32)}
    a = loss(params, {}, {**batch, **only2}, None)
    b = loss(params, {}, {**changed, **only2}, None)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    c = loss(params, {}, {**changed, "weights": (seg == 1).astype(jnp.float32)}, None)
    assert not np.allclose(c[0], loss(params, {}, {**batch, "weights": (seg == 1).astype(jnp.float32)}, None)[0])


def test_state_resumes_exactly_and_the_stream_cannot_jump(corpus):
    meta, _ = corpus
    stream = grain_pipeline.PackedStream(meta, _cfg())
    probe = stream.batches(0, 1)
    first = stream.batches(0, 5)  # repeating the last start step (the trainer's shape probe) is allowed
    np.testing.assert_array_equal(probe["inputs"][0], first["inputs"][0])
    state = stream.get_state()
    rest = stream.batches(5, 40)  # past one epoch (~90 rows an epoch)
    fresh = grain_pipeline.PackedStream(meta, _cfg())
    fresh.set_state(state)
    again = fresh.batches(5, 40)
    for key in rest:
        np.testing.assert_array_equal(again[key], rest[key])
    assert not np.array_equal(grain_pipeline.PackedStream(meta, _cfg()).batches(0, 40)["inputs"], rest["inputs"])
    with pytest.raises(ValueError, match="cannot jump"):
        fresh.batches(3, 1)


def test_processes_read_disjoint_slices(corpus):
    meta, _ = corpus
    halves = [
        grain_pipeline.PackedStream(meta, _cfg(), process_index=i, process_count=2).batches(
            0, 3, process_index=i, process_count=2
        )
        for i in range(2)
    ]
    assert halves[0]["inputs"].shape == (3, 2, 16)
    assert not np.array_equal(halves[0]["inputs"], halves[1]["inputs"])


def test_worker_processes_resume_exactly(corpus):
    meta, _ = corpus  # one worker process (each start imports jax: ~5 s), restarted by set_state
    stream = grain_pipeline.PackedStream(meta, _cfg(workers=1))
    stream.batches(0, 3)
    state = stream.get_state()
    rest = stream.batches(3, 4)
    stream.set_state(state)
    np.testing.assert_array_equal(stream.batches(3, 4)["inputs"], rest["inputs"])


def test_eval_batches_are_fixed(corpus):
    meta, _ = corpus
    a = grain_pipeline.eval_batches(meta, _cfg(), 3)
    b = grain_pipeline.eval_batches(meta, _cfg(), 3)
    assert a["inputs"].shape == (3, 4, 16)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_file_documents_stream_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "READ_CHARS", 7)  # paragraphs straddle reads
    monkeypatch.setattr(documents, "MAX_DOC_CHARS", 50)
    paras = [f"paragraph {i}\nline two" for i in range(250)] + ["x" * 120]
    (tmp_path / "c.txt").write_text("\n\n".join(paras), encoding="utf-8")
    train = list(documents.stream_documents(f"file:{tmp_path / 'c.txt'}", "train"))
    val = list(documents.stream_documents(f"file:{tmp_path / 'c.txt'}", "validation"))
    assert val == [paras[99], paras[199]]
    assert len(train) == 248 + 3 and train[0] == paras[0] and "".join(train[-3:]) == "x" * 120
    rows = [{"text": p} for p in paras[:150]]
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    assert list(documents.stream_documents(f"file:{tmp_path / 'c.jsonl.gz'}", "validation")) == [paras[99]]
    with pytest.raises(FileNotFoundError, match="file:<path"):
        list(documents.stream_documents(f"file:{tmp_path / 'missing.txt'}", "train"))


def test_tfds_split_streams_without_tensorflow(tfds_cache, monkeypatch):
    """A TFDS dataset prepared as array_record streams example by example (here our own builder)."""
    sources.local_builder("tiny_shakespeare", data_dir=tfds_cache)
    name = "gpt_jax_text/tiny_shakespeare"
    texts = sources.stream_tfds_text(name, "validation", tfds_cache, "text")
    first = next(texts)
    assert isinstance(first, str) and first
    monkeypatch.setattr(sources, "MAX_JOINED_CHARS", 50_000)  # the joined (small-corpus) path refuses big splits
    with pytest.raises(ValueError, match="data.pipeline='grain'"):
        sources._load_tfds_builtin(name, tfds_cache, "text")


def test_tokenizer_sample_is_bounded(tmp_path):
    (tmp_path / "c.txt").write_text("\n\n".join(["abc def"] * 1000), encoding="utf-8")
    sample = documents.sample_text(f"file:{tmp_path / 'c.txt'}", 100)
    assert 90 <= len(sample) <= 110
    assert build_tokenizer("byte", sample).vocab_size == 256
