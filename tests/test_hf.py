"""HF GPT-2 interop against the real thing: small random `transformers.GPT2LMHeadModel`s (no
download) imported, compared logit for logit and token for token, exported back, the CLI round
trip, and the one-line errors. The oracle (torch + transformers) comes with `.[dev]`; without it
these tests skip locally and FAIL in CI (tests/optional_deps.py)."""

from __future__ import annotations

import functools
import json
import pathlib
import sys

import flax.linen
import jax
import ml_collections
import numpy as np
import pytest
from optional_deps import require

from gpt_jax import hf
from gpt_jax.config import ModelConfig
from gpt_jax.data import build_tokenizer, load_tokenizer, resolve_manual_dir
from gpt_jax.model import GPT
from gpt_jax.models import gpt
from gpt_jax.workdir import load_run

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(n_layer=2, n_head=4, n_embd=64, n_positions=64)
TOL = 1e-4  # float32 logits, ours vs HF's


@pytest.fixture(scope="module")
def oracle():
    torch = require("torch")
    transformers = require("transformers")
    transformers.logging.set_verbosity_error()
    # Tiny models: torch's OpenMP threads only fight XLA's for the 2 cores (25x slower generate).
    torch.set_num_threads(1)
    return torch, transformers


@pytest.fixture(scope="module")
def shakespeare() -> str:
    try:
        base = resolve_manual_dir(None, dataset="tiny_shakespeare")
    except FileNotFoundError as e:
        pytest.fail(str(e))
    return (base / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")[:200_000]


@pytest.fixture(scope="module")
def tokenizer(shakespeare):
    """A GPT-2-style byte-level BPE (300 ids, <|endoftext|> = 299) trained on Shakespeare."""
    return build_tokenizer("bpe", shakespeare, vocab_size=300)


def random_gpt2(oracle, vocab_size: int = 300, seed: int = 0, **overrides):
    """A GPT2LMHeadModel with weights large enough that any mapping error shows in the logits."""
    torch, transformers = oracle
    config = transformers.GPT2Config(
        **{**SMALL, "vocab_size": vocab_size, "bos_token_id": None, "eos_token_id": None, **overrides}
    )
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith(".weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def hf_logits(oracle, model, ids_BxL) -> np.ndarray:
    torch, _ = oracle
    with torch.no_grad():
        return model(torch.tensor(np.asarray(ids_BxL), dtype=torch.long)).logits.numpy()


@functools.cache
def _forward(cfg: ModelConfig):
    return jax.jit(lambda params, ids_BxL: GPT(cfg).apply({"params": params}, ids_BxL))  # 1 compile < eager


def our_logits(cfg: ModelConfig, params, ids_BxL) -> np.ndarray:
    return np.asarray(_forward(cfg)(params, np.asarray(ids_BxL, np.int32)))


def ids(vocab: int = 300, shape=(2, 64), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, shape)


@pytest.fixture(scope="module")
def hf_dir(oracle, tokenizer, tmp_path_factory):
    """HF folder as save_pretrained writes it: config.json + model.safetensors + tokenizer files."""
    path = tmp_path_factory.mktemp("hf_gpt2")
    model = random_gpt2(oracle)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path, model_max_length=SMALL["n_positions"])
    return path, model


def assert_close(ours, theirs, tol=TOL):
    assert np.abs(theirs).max() > 1.0  # logits are not all ~0: the comparison means something
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=tol)


# --- import ------------------------------------------------------------------------------------


def test_import_safetensors_matches_transformers_logits(oracle, hf_dir):
    path, model = hf_dir
    cfg, params = hf.load_gpt2(path)
    assert (cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (300, 64, 2, 4, 64)
    assert cfg.tie_embeddings and cfg.bias and cfg.norm_eps == 1e-5 and cfg.d_ff is None
    assert params["h_0"]["attn"]["query"]["kernel"].shape == (64, 4, 16)
    assert params["h_0"]["attn"]["out_kernel"].shape == (4, 16, 64)
    x = ids()
    assert_close(our_logits(cfg, params, x), hf_logits(oracle, model, x))


def test_import_pytorch_bin_with_legacy_names(oracle, hf_dir, tmp_path):
    """pytorch_model.bin as the original GPT-2 uploads: no 'transformer.' prefix, mask buffers."""
    torch, _ = oracle
    path, model = hf_dir
    state = {k.removeprefix("transformer."): v for k, v in model.state_dict().items()}
    for i in range(SMALL["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64, dtype=torch.uint8))
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    cfg, params = hf.load_gpt2(tmp_path)
    x = ids(seed=2)
    assert_close(our_logits(cfg, params, x), hf_logits(oracle, model, x))


def test_import_untied_ninner_eps_and_upcast_options(oracle, tmp_path):
    model = random_gpt2(
        oracle,
        vocab_size=280,
        tie_word_embeddings=False,
        n_inner=96,
        layer_norm_epsilon=1e-3,
        reorder_and_upcast_attn=True,  # same float32 math, accepted
        activation_function="gelu_pytorch_tanh",
        attn_implementation="eager",
    )
    model.save_pretrained(tmp_path / "in")
    cfg, params = hf.load_gpt2(tmp_path / "in")
    assert (cfg.tie_embeddings, cfg.d_ff, cfg.norm_eps) == (False, 96, 1e-3) and "lm_head" in params
    x = ids(280, seed=3)
    theirs = hf_logits(oracle, model, x)
    assert_close(our_logits(cfg, params, x), theirs)
    hf.save_gpt2(cfg, params, tmp_path / "out")
    back = oracle[1].GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert not back.config.tie_word_embeddings
    assert_close(hf_logits(oracle, back, x), theirs)  # exported as gelu_new, no upcast: not bitwise


def test_bfloat16_file_imports_as_float32(oracle, tmp_path):
    torch, _ = oracle
    model = random_gpt2(oracle).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    cfg, params = hf.load_gpt2(tmp_path)
    assert params["wte"].dtype == np.float32
    np.testing.assert_array_equal(params["wte"], model.transformer.wte.weight.detach().float().numpy())


# --- export ------------------------------------------------------------------------------------


def test_export_loads_in_transformers_with_its_tokenizer(oracle, hf_dir, tokenizer, tmp_path):
    _, transformers = oracle
    path, model = hf_dir
    cfg, params = hf.load_gpt2(path)
    written = hf.save_gpt2(cfg, params, tmp_path, tokenizer=tokenizer)
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"} <= set(written)
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert back.config.eos_token_id == tokenizer.eos_id == 299
    x = ids(seed=4)
    np.testing.assert_array_equal(hf_logits(oracle, back, x), hf_logits(oracle, model, x))
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "ROMEO:\nWherefore art thou, Romeo? 宋词 😀 <|endoftext|>"
    assert hf_tok(text)["input_ids"] == tokenizer.encode(text).tolist()
    assert hf_tok.decode(tokenizer.encode(text)) == text


def test_export_of_a_workdir_trained_here(oracle, tiny_run, tmp_path, capsys):
    """configs/tiny.py (GPT-2 layout, char tokenizer) trained by gpt_jax.main -> transformers."""
    _, transformers = oracle
    _, workdir, _ = tiny_run
    assert hf.main(["export", f"--workdir={workdir}", f"--hf_dir={tmp_path}"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] > 0 and "'char' tokenizer has no HF equivalent" in result["note"]
    _, cfg, params, _ = load_run(workdir)
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    x = ids(cfg.vocab_size, shape=(2, cfg.block_size), seed=7)
    np.testing.assert_allclose(hf_logits(oracle, back, x), our_logits(cfg, params, x), rtol=0, atol=TOL)


def test_scanned_layers_export_and_import_back(tmp_path):
    """scan_layers=True stacks the blocks under h/block: export unstacks them (no transformers needed)."""
    from gpt_jax.model import init_params

    cfg = ModelConfig(vocab_size=300, block_size=64, n_layer=3, n_head=4, n_embd=64, scan_layers=True)
    # Random params of the flat model's shapes (numpy: XLA takes ~10 s to compile the RNG init),
    # stacked as the scanned model holds them; its forward below accepts exactly this layout.
    shapes = flax.linen.meta.unbox(
        jax.eval_shape(lambda: init_params(cfg.replace(scan_layers=False), jax.random.key(0)))
    )
    rng = np.random.default_rng(0)
    flat = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), shapes)
    scanned = {k: v for k, v in flat.items() if not k.startswith("h_")}
    scanned["h"] = {"block": jax.tree.map(lambda *xs: np.stack(xs), *[flat[f"h_{i}"] for i in range(3)])}
    hf.save_gpt2(cfg, scanned, tmp_path)
    cfg2, params2 = hf.load_gpt2(tmp_path)
    assert cfg2 == cfg.replace(scan_layers=False)
    x = ids(shape=(2, 16), seed=8)
    np.testing.assert_allclose(our_logits(cfg2, params2, x), our_logits(cfg, scanned, x), atol=1e-5)
    assert jax.tree.all(jax.tree.map(np.array_equal, params2, flat))


@pytest.mark.parametrize(
    "field, value",
    [("bias", False), ("pos", "rope"), ("norm", "rmsnorm"), ("mlp", "swiglu"), ("n_kv_head", 2)],
)
def test_export_refuses_layouts_gpt2_cannot_hold(field, value, tmp_path):
    cfg = ModelConfig(vocab_size=300, block_size=64, n_layer=2, n_head=4, n_embd=64, **{field: value})
    with pytest.raises(hf.HFError, match=f"model.{field}={value!r}" if field != "n_kv_head" else "n_kv_head=2") as e:
        hf.save_gpt2(cfg, {}, tmp_path)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())


# --- CLI round trip ----------------------------------------------------------------------------


def test_cli_import_restore_export_round_trip(oracle, hf_dir, tokenizer, tmp_path, capsys):
    from gpt_jax import sharding as shd
    from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
    from gpt_jax.models.registry import build_model_config
    from gpt_jax.optim import make_optimizer
    from gpt_jax.tasks.lm_state import state_shardings
    from gpt_jax.trainer import restore_or_init

    _, transformers = oracle
    path, model = hf_dir
    workdir, out = tmp_path / "run", tmp_path / "exported"
    assert hf.main(["import", f"--hf_dir={path}", f"--workdir={workdir}"]) == 0
    assert json.loads(capsys.readouterr().out)["tokenizer_vocab"] == 300
    assert {"config.json", "model_config.json", "tokenizer.json", "checkpoints"} <= {p.name for p in workdir.iterdir()}
    assert load_tokenizer(workdir).encode("O Romeo").tolist() == tokenizer.encode("O Romeo").tolist()

    # What gpt_jax.evaluate and a resumed (fine-tuning) run do with the workdir, on conftest's
    # 8-device mesh: rebuild the model from config.json, restore the full train state.
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    assert config.data.tokenizer == "bpe"
    cfg = build_model_config(config, load_tokenizer(workdir).vocab_size)
    tx, _ = make_optimizer(config.optim, config.train.num_steps, gpt.matrix_dims)
    mesh = shd.make_mesh({a: config.mesh[a] for a in shd.MESH_AXES})
    abstract, shardings = state_shardings(cfg, tx, mesh)
    ckpt = Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True)
    state, meta = restore_or_init(ckpt, abstract, shardings, init=lambda: pytest.fail("no checkpoint"))
    assert meta["step"] == 0 and int(state.step) == 0 and len(mesh.devices.flat) == 8
    x = ids(seed=5)
    theirs = hf_logits(oracle, model, x)
    assert_close(our_logits(cfg, state.params, x), theirs)

    assert hf.main(["export", f"--workdir={workdir}", f"--hf_dir={out}"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 0
    back = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    np.testing.assert_array_equal(hf_logits(oracle, back, x), theirs)

    # A second import into the same workdir is refused.
    assert hf.main(["import", f"--hf_dir={path}", f"--workdir={workdir}"]) == 2
    assert "already holds a run" in capsys.readouterr().err


# --- generation parity (gpt_jax.generate, KV cache) ---------------------------------------------


def test_greedy_and_beam_continuations_match_transformers(oracle, hf_dir):
    torch, _ = oracle
    from gpt_jax.generate import GenerateOptions, generate

    path, model = hf_dir
    cfg, params = hf.load_gpt2(path)
    prompt = ids(shape=(2, 7), seed=6)
    n = 20
    with torch.no_grad():
        common = dict(max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
        greedy = model.generate(torch.tensor(prompt), num_beams=1, **common)[:, prompt.shape[1] :].numpy()
        beam = model.generate(torch.tensor(prompt), num_beams=3, length_penalty=1.0, early_stopping=True, **common)[
            :, prompt.shape[1] :
        ].numpy()
    ours_greedy = generate(cfg, params, prompt, GenerateOptions(max_new_tokens=n, temperature=0.0))
    beams = GenerateOptions(max_new_tokens=n, num_beams=3, length_penalty=1.0, early_stopping=True)
    ours_beam = generate(cfg, params, prompt, beams)
    np.testing.assert_array_equal(ours_greedy, greedy)
    np.testing.assert_array_equal(ours_beam, beam)
    assert not np.array_equal(greedy, beam)  # the beams really searched


# --- errors ------------------------------------------------------------------------------------


def _edited_copy(src: pathlib.Path, dst: pathlib.Path, **config_edits) -> pathlib.Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    config = json.loads((src / "config.json").read_text())
    config.update(config_edits)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _one_line_error(path, match: str):
    with pytest.raises(hf.HFError, match=match) as e:
        hf.load_gpt2(path)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(
    "edits, match",
    [
        (dict(model_type="llama"), r"config.json: model_type='llama' is not 'gpt2'"),
        (dict(activation_function="relu"), r"config.json: activation_function='relu' is unsupported"),
        (dict(activation_function="gelu"), r"activation_function='gelu' is unsupported"),
        (
            dict(scale_attn_by_inverse_layer_idx=True),
            r"config.json: scale_attn_by_inverse_layer_idx=True is unsupported",
        ),
        (dict(scale_attn_weights=False), r"scale_attn_weights=False is unsupported"),
        (dict(add_cross_attention=True), r"add_cross_attention=True is unsupported"),
        (dict(n_embd=32), r"model.safetensors: wte.weight has shape \(300, 64\) but config.json implies \(300, 32\)"),
        (dict(n_layer=3), r"model.safetensors: no tensor 'h.2.attn.c_attn.weight'"),
        (dict(n_layer=1), r"model.safetensors: unexpected tensors \['h.1.attn.c_attn.bias'"),
        (dict(n_head=5), r"config.json: model.n_embd=64 is not divisible by model.n_head=5"),
    ],
)
def test_bad_configs_are_one_line_errors(hf_dir, tmp_path, edits, match):
    _one_line_error(_edited_copy(hf_dir[0], tmp_path, **edits), match)


def test_bad_weight_files_are_one_line_errors(oracle, hf_dir, tmp_path, monkeypatch):
    torch, _ = oracle
    src = hf_dir[0]
    d = _edited_copy(src, tmp_path / "cut")
    data = (src / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_error(d, r"model.safetensors: cannot read safetensors .*truncated or corrupt")
    (d / "model.safetensors").unlink()
    _one_line_error(d, r"has no model.safetensors or pytorch_model.bin")
    (d / "config.json").unlink()
    with pytest.raises(hf.HFError, match=r"config.json not found"):
        hf.load_gpt2(d)

    b = _edited_copy(src, tmp_path / "bin")
    (b / "model.safetensors").unlink()
    torch.save(hf_dir[1].state_dict(), b / "pytorch_model.bin")
    blob = (b / "pytorch_model.bin").read_bytes()
    (b / "pytorch_model.bin").write_bytes(blob[: len(blob) // 2])
    _one_line_error(b, r"pytorch_model.bin: cannot read PyTorch weights .*truncated or corrupt")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    _one_line_error(b, r"pytorch_model.bin is a PyTorch pickle and reading it needs torch")

    s = _edited_copy(src, tmp_path / "shards")
    (s / "model.safetensors").unlink()
    (s / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"wte.weight": "model-00001.safetensors"}})
    )
    _one_line_error(s, r"model-00001.safetensors not found, but model.safetensors.index.json lists it")


def test_cli_errors_are_one_line(hf_dir, shakespeare, tmp_path, capsys):
    def run(*argv) -> str:
        assert hf.main(list(argv)) == 2
        err = capsys.readouterr().err
        return err

    assert "usage" in run()
    assert "--workdir is required" in run("import", f"--hf_dir={hf_dir[0]}")
    assert "unknown flag --tokenizer" in run("export", "--workdir=w", "--hf_dir=d", "--tokenizer=t")
    # No tokenizer files in the HF folder: named, with the fix (--tokenizer=PATH) documented in USAGE.
    bare = _edited_copy(hf_dir[0], tmp_path / "bare")
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (bare / name).unlink()
    err = run("import", f"--hf_dir={bare}", f"--workdir={tmp_path / 'w1'}")
    assert err.count("\n") == 1 and "no tokenizer.json and no vocab.json + merges.txt" in err
    # A tokenizer (--tokenizer=PATH) with more ids than the model's vocabulary.
    build_tokenizer("bpe", shakespeare, vocab_size=400).save_pretrained(tmp_path / "tok400")
    err = run("import", f"--hf_dir={hf_dir[0]}", f"--workdir={tmp_path / 'w2'}", f"--tokenizer={tmp_path / 'tok400'}")
    assert err.count("\n") == 1 and "the tokenizer has 400 ids but" in err and "vocab_size=300" in err
    assert not (tmp_path / "w2").exists()
    # A workdir from the trainer with a non-GPT-2 layout: export refuses before restoring anything.
    wd = tmp_path / "rope_run"
    wd.mkdir()
    fields = {**json.loads(json.dumps(ModelConfig().__dict__)), "pos": "rope"}
    (wd / "model_config.json").write_text(json.dumps(fields))
    err = run("export", f"--workdir={wd}", f"--hf_dir={tmp_path / 'o'}")
    assert err.count("\n") == 1 and "model.pos='rope' has no GPT-2 equivalent" in err
