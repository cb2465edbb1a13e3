"""Acceptance: the grain pipeline streams a corpus several times larger than a memory cap set on the
reading process (RLIMIT_AS), with flat RSS; a reader that kept what it read breaks the same cap."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

CAP_MB = 16  # address space the reader may add once warmed up
CORPUS_MB = 3.5 * CAP_MB
REPO = pathlib.Path(__file__).resolve().parents[1]

# Runs in a fresh process (no XLA device flags, no pytest): writes the corpus, warms the reader up,
# caps the address space at (current + CAP_MB), then streams every record of the corpus.
READER = r"""
import json, resource, sys, numpy as np
from gpt_jax.data import grain_pipeline, shards
root, cap_mb, corpus_mb, hoard = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "hoard"

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

record_tokens = 8192
n_records = int(corpus_mb * 2**20 / (2 * record_tokens)) + 1
docs = (np.random.default_rng(i).integers(0, 50000, record_tokens - 1) for i in range(n_records))
meta = shards.prepare_shards(root, {"train": docs, "validation": iter([np.arange(10)])},
                             vocab_size=50304, eos_id=50256, max_record_tokens=record_tokens)
corpus_bytes = sum(p.stat().st_size for p in meta.directory.glob("train/*.array_record"))
cfg = grain_pipeline.StreamConfig(batch_size=8, block_size=2048, seed=0, packing_bins=8)
stream = grain_pipeline.PackedStream(meta, cfg)
rows_per_epoch = n_records * record_tokens // 2048
steps = rows_per_epoch // 8
warm = max(steps // 20, 2)
stream.batches(0, warm)
resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + cap_mb * 2**20,) * 2)
rss_start, rss_max, kept, tokens = status("VmRSS"), 0, [], 0
try:
    for step in range(warm, steps):
        b = stream.batches(step, 1)
        tokens += int(b["weights"].sum())
        if hoard:
            kept.append(b)
        rss_max = max(rss_max, status("VmRSS"))
    result = {"ok": True}
except MemoryError:
    result = {"ok": False, "error": "MemoryError"}
result.update(corpus_bytes=corpus_bytes, rss_start=rss_start, rss_max=rss_max, tokens=tokens,
              epoch_tokens=n_records * record_tokens, steps=steps)
print(json.dumps(result))
"""


def _read(tmp_path, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", READER, str(tmp_path / "corpus"), str(CAP_MB), str(CORPUS_MB), mode],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        # Some allocators fail outside Python's MemoryError (e.g. a C++ std::bad_alloc abort).
        return {"ok": False, "error": f"exit {proc.returncode}: {proc.stderr[-500:]}"}
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("big")


def test_streams_a_corpus_3x_the_memory_cap_with_flat_rss(corpus_dir):
    got = _read(corpus_dir, "stream")
    assert got["ok"], got
    assert got["corpus_bytes"] >= 3 * CAP_MB * 2**20
    assert got["tokens"] >= 0.9 * got["epoch_tokens"]  # the whole epoch went through (minus the warm-up)
    assert got["rss_max"] - got["rss_start"] < 8 * 2**20, got  # flat: no growth with what was read


def test_a_reader_that_keeps_what_it_reads_breaks_the_same_cap(corpus_dir):
    """The control: the cap is tight enough to catch a reader that holds the corpus."""
    got = _read(corpus_dir, "hoard")
    assert not got["ok"], got
