"""gs:// workdirs through etils.epath (gpt_jax.paths): URIs are kept intact and read/written through epath's
backend, never turned into a local `gs:/...` path.

Offline there is no GCS, so `fake_bucket` registers an epath backend for gs:// that stores objects under a
temp dir and, as GCS does, refuses appends. Orbax's array data goes through tensorstore's own GCS driver,
which no epath backend reaches: for checkpoints the test checks what Orbax is handed.
"""

from __future__ import annotations

import json
import logging
import os

import ml_collections
import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath

from gpt_jax import checkpoint, checkpoint_integrity, metrics, paths, run_config, workdir
from gpt_jax.workdir_lock import WorkdirLock

RUN = "gs://bucket/runs/r1"


class FakeBucket(epath_backend._OsPathBackend):
    """gs://<bucket>/<key> stored at <root>/<bucket>/<key>; appends refused (objects are written whole)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def local(self, path) -> str:
        s = os.fspath(path)
        if s.startswith(self.root):  # the os backend's own helpers call back with a mapped path
            return s
        assert s.startswith("gs://"), f"a non-URI path reached the gs:// backend: {s}"
        return os.path.join(self.root, s[len("gs://") :])

    def uri(self, local: str) -> str:
        return "gs://" + os.path.relpath(os.fspath(local), self.root)

    def open(self, path, mode):
        if "a" in mode:
            raise OSError(f"gs:// objects cannot be appended to: {path}")
        if "w" in mode:
            os.makedirs(os.path.dirname(self.local(path)), exist_ok=True)  # a bucket has no directories
        return super().open(self.local(path), mode)

    def exists(self, path):
        return super().exists(self.local(path))

    def isdir(self, path):
        return super().isdir(self.local(path))

    def listdir(self, path):
        return super().listdir(self.local(path))

    def glob(self, path):
        return [self.uri(p) for p in super().glob(self.local(path))]

    def walk(self, top, *, top_down=True, on_error=None):
        for root, dirs, files in super().walk(self.local(top), top_down=top_down, on_error=on_error):
            yield self.uri(root), dirs, files

    def makedirs(self, path, *, exist_ok=False, mode=None):
        return super().makedirs(self.local(path), exist_ok=exist_ok)

    def mkdir(self, path, *, exist_ok=False, mode=None):
        return super().makedirs(self.local(path), exist_ok=True)

    def rmtree(self, path):
        return super().rmtree(self.local(path))

    def remove(self, path):
        return super().remove(self.local(path))

    def rename(self, path, dst):
        return super().rename(self.local(path), self.local(dst))

    def replace(self, path, dst):
        return super().replace(self.local(path), self.local(dst))

    def copy(self, path, dst, overwrite):
        return super().copy(self.local(path), self.local(dst), overwrite)

    def stat(self, path):
        return super().stat(self.local(path))


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The local folder behind gs://; the test runs in an empty cwd, so a mangled `gs:/...` path shows."""
    root = tmp_path / "gcs"
    root.mkdir()
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", FakeBucket(str(root)))
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # else epath would pick tf.io.gfile
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield root
    assert not (cwd / "gs:").exists(), "a gs:// path was used as a local path"


def test_uris_stay_uris():
    p = paths.as_path(RUN)
    assert str(p / "checkpoints") == f"{RUN}/checkpoints" == str(checkpoint.checkpoint_dir(RUN))
    assert str(paths.absolute(RUN)) == RUN and not paths.is_local(RUN)
    assert paths.is_local("/tmp/x") and paths.is_local("runs/x")
    assert str(paths.absolute("runs/x")) == os.path.join(os.getcwd(), "runs/x")
    assert str(paths.as_path("~/x")) == os.path.expanduser("~/x")


def test_run_files_on_a_bucket(bucket):
    wd = paths.as_path(RUN)
    config = ml_collections.ConfigDict({"seed": 0, "train": {"batch_size": 2}})
    run_config.check_writable(wd)
    run_config.save_run(wd, config, {"n_layer": 1}, step=0)
    run_config.save_run(wd, config, {"n_layer": 1}, step=5)  # a resume: history grows without an append
    local = bucket / "bucket" / "runs" / "r1"
    assert json.loads((local / "model_config.json").read_text()) == {"n_layer": 1}
    history = [json.loads(line) for line in (local / run_config.HISTORY_FILE).read_text().splitlines()]
    assert [h["event"] for h in history] == ["start", "resume"]
    assert workdir.read_run_file(RUN, "model_config.json") == {"n_layer": 1}
    assert run_config.check_resume(wd, config) == {}
    with pytest.raises(FileNotFoundError, match=f"{RUN}/summary.json not found"):
        workdir.read_run_file(RUN, "summary.json")


def test_metrics_on_a_bucket(bucket):
    with metrics.MetricWriter(RUN, tensorboard=False) as w:
        w.write(1, {"loss": 2.0})
        w.write(2, {"loss": 1.5})
    assert [r["step"] for r in metrics.read_metrics(RUN)] == [1, 2]
    with metrics.MetricWriter(RUN, resume_step=1, tensorboard=False) as w:  # drops step 2, continues
        w.write(3, {"loss": 1.0})
    assert [r["step"] for r in metrics.read_metrics(RUN)] == [1, 3]
    assert (bucket / "bucket" / "runs" / "r1" / metrics.METRICS_FILE).is_file()


def test_tokenizer_on_a_bucket(bucket):
    from gpt_jax.data.tokenizers import load_tokenizer
    from gpt_jax.data.tokenizers.byte import ByteTokenizer

    tok = ByteTokenizer()
    tok.save(RUN)
    assert load_tokenizer(RUN).encode("gs").tolist() == tok.encode("gs").tolist()


def test_bucket_workdir_is_not_locked_and_says_so(bucket, caplog):
    with caplog.at_level(logging.WARNING), WorkdirLock(RUN) as lock:
        assert not lock.held
    assert "not on a local filesystem" in caplog.text


def test_integrity_record_on_a_bucket(bucket):
    step = paths.as_path(RUN) / "checkpoints" / "7"
    (step / "state").mkdir(parents=True)
    (step / "state" / "data").write_text("abc")
    (step / "meta").write_text("{}")
    checkpoint_integrity.write_record(step)
    record = json.loads((step / checkpoint_integrity.RECORD_FILE).read_text())
    assert sorted(record["files"]) == ["meta", "state/data"]
    assert checkpoint_integrity.verify(step) is None
    (step / "state" / "data").write_text("abd")
    assert "state/data does not match" in checkpoint_integrity.verify(step)


@pytest.mark.parametrize("where", ["bucket", "local"])
def test_orbax_gets_the_workdir_intact(where, tmp_path, monkeypatch):
    seen = {}

    class Manager:
        def __init__(self, directory, options):
            seen["directory"], seen["options"] = directory, options

    monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", Manager)
    wd = RUN if where == "bucket" else str(tmp_path / "run")
    checkpoint.Checkpointer(checkpoint.checkpoint_dir(wd), save_every=1)
    assert str(seen["directory"]) == f"{wd}/checkpoints"
    want = (
        checkpoint_integrity.IntegrityCommitFilePath
        if where == "bucket"
        else checkpoint_integrity.IntegrityTemporaryPath
    )
    assert seen["options"].temporary_path_class is want


def test_adapter_file_on_a_bucket(bucket):
    import numpy as np

    from gpt_jax.peft import io

    trainable = {"h_0": {"lora_a": np.ones((2, 3), np.float32)}}
    n = io.save_adapter(f"{RUN}/adapter.safetensors", "lora", {"rank": 2}, trainable, {"wte": [4, 2]})
    assert (bucket / "bucket" / "runs" / "r1" / "adapter.safetensors").stat().st_size == n


def test_data_and_compress_paths_keep_uris(bucket):
    from gpt_jax.compression import stored
    from gpt_jax.data import sources

    assert str(sources.resolve_tfds_dir("gs://bucket/tfds")) == "gs://bucket/tfds"
    paths.as_path(f"{RUN}/config.json").write_text("{}")
    src, dst = stored.check_paths(RUN, "compressed")
    assert str(src) == RUN and dst == paths.as_path("compressed").resolve()
    assert not stored.is_compressed(RUN)
    with pytest.raises(ValueError, match="not a local directory") as e:
        stored.check_paths(RUN, "gs://bucket/out")
    assert "\n" not in str(e.value)


def test_bpe_folder_and_sample_grid_on_a_bucket(bucket, tmp_path):
    """A GPT-2-style BPE folder read from gs:// (data.tokenizer_path / GPT_JAX_GPT2_TOKENIZER), and a GAN
    sample grid written to gs:// (one object write, no local `gs:` folder)."""
    import numpy as np

    from gpt_jax.analysis import gan_samples
    from gpt_jax.data.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.from_train_text("the digit seven and the digit eight " * 50, vocab_size=300)
    local = tmp_path / "bpe"
    tok.save_pretrained(local)
    remote = paths.as_path("gs://bucket/tok")
    for f in ("vocab.json", "merges.txt"):
        (remote / f).write_bytes((local / f).read_bytes())
    back = BPETokenizer.from_pretrained("gs://bucket/tok")
    assert back.encode("the digit seven").tolist() == tok.encode("the digit seven").tolist()

    out = gan_samples.write_png("gs://bucket/runs/g/samples.png", np.zeros((4, 8, 8, 1), np.float32), cols=2)
    assert str(out) == "gs://bucket/runs/g/samples.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not os.path.exists("gs:")
