"""experiments/make_random_gpt2.py: the HF folder it writes is the model transformers builds under that seed,
over the given tokenizer, and `gpt_jax.hf import` takes it as it is (tokenizer included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from optional_deps import require

from experiments import make_random_gpt2
from gpt_jax import hf
from gpt_jax.data import build_tokenizer, load_tokenizer

TEXT = "the quick brown fox jumps over the lazy dog. " * 40 + "a movie that is both funny and sad, 1999. " * 40
SIZES = ["--n_positions=32", "--n_embd=16", "--n_layer=1", "--n_head=2"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_tokenizer("bpe", TEXT, vocab_size=300).save(path)  # a gpt_jax workdir's tokenizer.json
    return path


def test_folder_is_the_seeded_transformers_model_and_imports(tok_dir, tmp_path, capsys):
    torch = require("torch")
    transformers = require("transformers")
    out = tmp_path / "hf"
    assert make_random_gpt2.main([f"--tokenizer={tok_dir / 'tokenizer.json'}", f"--out={out}", *SIZES]) == 0
    printed = json.loads(capsys.readouterr().out)
    tok = load_tokenizer(tok_dir)
    assert printed["vocab_size"] == tok.vocab_size == 300 and printed["eos_token_id"] == tok.eos_id
    config = json.loads((out / "config.json").read_text())
    assert (config["n_positions"], config["n_embd"], config["n_layer"], config["n_head"]) == (32, 16, 1, 2)

    # The same weights transformers builds after torch.manual_seed(0); another seed gives others.
    torch.manual_seed(0)
    expected = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{k: config[k] for k in printed if k != "out"}))
    loaded = transformers.GPT2LMHeadModel.from_pretrained(out)
    for name, value in expected.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), value.numpy(), err_msg=name)
    other = tmp_path / "hf_seed1"
    make_random_gpt2.main([f"--tokenizer={tok_dir}", f"--out={other}", "--seed=1", *SIZES])
    wte = transformers.GPT2LMHeadModel.from_pretrained(other).transformer.wte.weight
    assert not torch.equal(wte, loaded.transformer.wte.weight)

    # gpt_jax.hf import reads the folder's tokenizer.json: the workdir tokenizes as the source did.
    workdir = tmp_path / "run"
    assert hf.main(["import", f"--hf_dir={out}", f"--workdir={workdir}"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["tokenizer_vocab"] == 300
    text = "a funny movie, 1999"
    assert load_tokenizer(workdir).encode(text).tolist() == tok.encode(text).tolist()
    cfg, params = hf.load_gpt2(out)
    assert (cfg.vocab_size, cfg.block_size, cfg.n_layer) == (300, 32, 1)
    np.testing.assert_array_equal(np.asarray(params["wte"]), loaded.transformer.wte.weight.detach().numpy())
