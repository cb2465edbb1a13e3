"""Clear errors instead of tracebacks (issue 16, data and chat): one line naming what and where, and the fix.

Tiny inputs in tmp dirs; every TFDS cache here is a fresh tmp dir, never the real one.
"""

from __future__ import annotations

import io
import logging
import pathlib
import shutil
import subprocess
import sys

import pytest

from gpt_jax import chat
from gpt_jax.chat import ChatSession, ChatTemplate
from gpt_jax.data import load_text_splits, sources, text_builder

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = "tiny_shakespeare/input.txt"
FIX = (
    "or set config.data.manual_dir (or $GPT_JAX_DATA_DIR) to the folder that holds the real tiny_shakespeare/input.txt."
)
SMALL_TEXT = "".join(f"Line {i}: to be, or not to be.\r\n" for i in range(200))  # \r\n kept as is


def write_corpus(root: pathlib.Path, data: bytes) -> pathlib.Path:
    path = root / CORPUS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- corpus files: empty, not UTF-8, too short ------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "error: corpus {path} is empty (0 bytes); put the training text in it, " + FIX),
        (
            b"hello\nwor\xffld\n",
            (
                "error: {path} is not UTF-8: byte 0xff at offset 9 (line 2, byte 4 of that line) cannot be "
                "decoded; re-encode the file as UTF-8 (e.g. iconv -f <its encoding> -t utf-8)."
            ),
        ),
    ],
    ids=["empty", "not_utf8"],
)
def test_bad_corpus_is_one_line_error_from_main(tmp_path, data, message):
    path = write_corpus(tmp_path / "data", data)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpt_jax.main",
            "--config=configs/tiny.py",
            f"--workdir={tmp_path / 'w'}",
            f"--config.data.manual_dir={tmp_path / 'data'}",
            f"--config.data.tfds_dir={tmp_path / 'tfds'}",
            "--config.train.num_steps=1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == message.format(path=path)
    # Nothing half-prepared is left behind: the next run with a fixed corpus prepares it.
    write_corpus(tmp_path / "data", SMALL_TEXT.encode())
    splits = load_text_splits("tiny_shakespeare", manual_dir=tmp_path / "data", data_dir=tmp_path / "tfds")
    assert splits["train"] + splits["validation"] == SMALL_TEXT


def test_too_short_corpus_names_its_size(tmp_path):
    path = write_corpus(tmp_path / "data", b"a")
    with pytest.raises(ValueError) as e:
        load_text_splits("tiny_shakespeare", manual_dir=tmp_path / "data", data_dir=tmp_path / "tfds")
    assert str(e.value) == (
        f"corpus {path} holds 1 characters of text (1 bytes): too few to split 0.9/0.1 into non-empty train "
        "and validation parts; add text to it, " + FIX
    )


def test_readers_name_file_and_offset(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_bytes(b"label\tsentence\n1\tfine\n0\tna\xefve caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ValueError) as e:
        list(text_builder.iter_tsv_rows(tsv))
    assert str(e.value).startswith(f"{tsv} is not UTF-8: byte 0xef at offset 26 (line 3, byte 5 of that line)")
    jsonl = tmp_path / "poems.jsonl"
    jsonl.write_text('{"paragraphs": ["a", "b"]}\n\n{"title": "no paragraphs"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{jsonl}:3: expected a JSON object with a 'paragraphs' list \(KeyError"):
        text_builder.read_poetry_jsonl(jsonl)
    # Valid files read exactly as before: \r\n kept by read_utf8, universal newlines for JSONL lines.
    plain = tmp_path / "plain.txt"
    plain.write_bytes("a\r\nb é\r\n".encode())
    assert text_builder.read_utf8(plain) == "a\r\nb é\r\n"
    jsonl.write_bytes(b'{"paragraphs": ["x", "y"]}\r\n\r\n{"paragraphs": ["z"]}\r\n')
    assert text_builder.read_poetry_jsonl(jsonl) == "x\ny\n\nz\n"


# --- a corrupted prepared TFDS cache is rebuilt ------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path, dict[str, str]]:
    """(manual dir, prepared TFDS dir, splits) for a small corpus."""
    root = tmp_path_factory.mktemp("cache")
    write_corpus(root / "data", SMALL_TEXT.encode())
    splits = load_text_splits("tiny_shakespeare", manual_dir=root / "data", data_dir=root / "tfds")
    return root / "data", root / "tfds", splits


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "dataset_info_empty": ("dataset_info.json", lambda p: p.write_bytes(b"")),
    "dataset_info_garbled": ("dataset_info.json", lambda p: p.write_bytes(b"\xde\xad\xbe\xef" + p.read_bytes())),
    "dataset_info_deleted": ("dataset_info.json", pathlib.Path.unlink),
    "metadata_truncated": ("metadata.json", _truncate),
    "train_shard_empty": ("gpt_jax_text-train.array_record-00000-of-00001", lambda p: p.write_bytes(b"")),
    "train_shard_truncated": ("gpt_jax_text-train.array_record-00000-of-00001", _truncate),
    "validation_shard_deleted": ("gpt_jax_text-validation.array_record-00000-of-00001", pathlib.Path.unlink),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupted_cache_is_rebuilt(prepared, tmp_path, caplog, corruption):
    manual_dir, tfds_dir, splits = prepared
    shutil.copytree(tfds_dir, tmp_path / "tfds")
    cache = sources.cache_path(text_builder.GptJaxText, "tiny_shakespeare", tmp_path / "tfds")
    name, corrupt = CORRUPTIONS[corruption]
    corrupt(cache / name)
    with caplog.at_level(logging.WARNING, logger=sources.__name__):
        assert load_text_splits("tiny_shakespeare", manual_dir=manual_dir, data_dir=tmp_path / "tfds") == splits
    [warning] = [r.getMessage() for r in caplog.records if r.name == sources.__name__]
    assert warning.startswith(f"The prepared TFDS cache {cache} ") and warning.endswith(
        "; deleting it and preparing again."
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=sources.__name__):  # rebuilt once: later runs just read it
        assert load_text_splits("tiny_shakespeare", manual_dir=manual_dir, data_dir=tmp_path / "tfds") == splits
    assert not [r for r in caplog.records if r.name == sources.__name__]


def test_cache_path_is_the_builders_data_path(prepared):
    _, tfds_dir, _ = prepared
    builder = text_builder.GptJaxText(config="tiny_shakespeare", data_dir=str(tfds_dir))
    assert sources.cache_path(text_builder.GptJaxText, "tiny_shakespeare", tfds_dir) == pathlib.Path(builder.data_path)


def test_undeletable_corrupted_cache_names_the_path_to_delete(prepared, tmp_path, monkeypatch):
    manual_dir, tfds_dir, _ = prepared
    shutil.copytree(tfds_dir, tmp_path / "tfds")
    cache = sources.cache_path(text_builder.GptJaxText, "tiny_shakespeare", tmp_path / "tfds")
    (cache / "dataset_info.json").write_bytes(b"")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    with pytest.raises(ValueError) as e:
        load_text_splits("tiny_shakespeare", manual_dir=manual_dir, data_dir=tmp_path / "tfds")
    assert str(e.value).startswith(f"The prepared TFDS cache {cache} cannot be read back (ParseError: ")
    assert str(e.value).endswith(
        f"and could not be deleted ([Errno 13] Permission denied: '{cache}'); delete it by hand."
    )


# --- chat: /params validation, errors on stderr naming the line, non-UTF-8 input ---------------


class _Session(ChatSession):
    def reply(self, user):
        yield f"echo {user}"


@pytest.mark.parametrize(
    "command, message",
    [
        ("temperature=-1", "temperature=-1.0 must be >= 0 (0 = greedy)"),
        ("top_p=0", "top_p=0.0 must be in (0, 1] (or None)"),
        ("top_p=1.5", "top_p=1.5 must be in (0, 1] (or None)"),
        ("top_k=0", "top_k=0 must be >= 1 (or None: no top-k)"),
        ("min_p=2", "min_p=2.0 must be in [0, 1] (or None)"),
        ("repetition_penalty=0", "repetition_penalty=0.0 must be > 0 (1 = off)"),
        ("max_new_tokens=0", "max_new_tokens=0 must be >= 1"),
        ("max_new_tokens=none", "max_new_tokens=none is not an integer"),
        ("temperature=hot", "temperature=hot is not a number"),
        ("top_k=2.5", "top_k=2.5 is not an integer (or none)"),
        ("top_k=5 temperature=-0.5", "temperature=-0.5 must be >= 0 (0 = greedy)"),  # all or nothing
    ],
)
def test_params_refuses_bad_values_and_keeps_settings(command, message):
    s = _Session(None, None, None, ChatTemplate.named("plain"))
    before = dict(s.options)
    with pytest.raises(ValueError) as e:
        s.command(f"/params {command}")
    assert str(e.value) == f"{message}; settings unchanged"
    assert s.options == before
    assert s.command("/params top_k=none top_p=0.9 temperature=0") == (
        "(max_new_tokens=200 seed=0 temperature=0.0 top_k=None top_p=0.9)"
    )


def test_pipe_mode_errors_go_to_err_naming_the_line():
    s = _Session(None, None, None, ChatTemplate.named("plain"))
    out, err = io.StringIO(), io.StringIO()
    lines = [b"hello\n", b"/params temperature=-1\n", b"caf\xe9\n", b"\n", b"/nope\n", b"again\r\n"]
    assert chat.run(s, lines, out, interactive=False, err=err) == 3
    assert out.getvalue() == "echo hello\necho again\n"
    assert err.getvalue().splitlines() == [
        "error: temperature=-1.0 must be >= 0 (0 = greedy); settings unchanged (input line 2)",
        (
            "error: byte 0xe9 at offset 32 of the input (byte 4 of its line) is not UTF-8; "
            "the input must be UTF-8 text: re-encode it with iconv -f <its encoding> -t utf-8 (input line 3)"
        ),
        "error: unknown command /nope; commands: /reset, /system <text>, /params k=v ..., /image PATH, /quit (input line 5)",
    ]


def test_bad_param_flag_is_refused_before_chatting(tiny_run, monkeypatch, capsys):
    _, workdir, _ = tiny_run
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"never read\n")))
    assert chat.main([f"--workdir={workdir}", "--top_p=2"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == "error: top_p=2.0 must be in (0, 1] (or None)"
    assert captured.out == ""


def test_cli_pipe_mode_exits_nonzero_with_errors_on_stderr(tiny_run):
    """The real CLI, stdin a pipe: bad lines are reported on stderr and fail the run; good ones still run."""
    _, workdir, _ = tiny_run
    proc = subprocess.run(
        [sys.executable, "-m", "gpt_jax.chat", f"--workdir={workdir}", "--max_new_tokens=4", "--temperature=0"],
        input=b"Hi\n/params temperature=-1\nwor\xffld\nAgain\n",
        capture_output=True,
        timeout=300,
        check=False,
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        "error: temperature=-1.0 must be >= 0 (0 = greedy); settings unchanged (input line 2)",
        (
            "error: byte 0xff at offset 29 of the input (byte 4 of its line) is not UTF-8; "
            "the input must be UTF-8 text: re-encode it with iconv -f <its encoding> -t utf-8 (input line 3)"
        ),
    ]
    assert "error:" not in proc.stdout.decode()  # replies only (a failed turn would add an error line above)
