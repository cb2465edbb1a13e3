"""A randomly initialised GPT-2-architecture Hugging Face folder over a gpt_jax BPE tokenizer.

  python -m experiments.make_random_gpt2 --tokenizer=runs/bpe/tokenizer.json --out=runs/gpt2_hf \
      [--n_positions=256] [--n_embd=128] [--n_layer=4] [--n_head=4] [--seed=0]
  python -m gpt_jax.hf import --hf_dir=runs/gpt2_hf --workdir=runs/gpt2

No pretrained GPT-2 weights are available offline, so this is the stand-in "GPT-2-architecture model
imported with `hf import`" of experiments/results/eval.md: `transformers.GPT2LMHeadModel` with
`GPT2Config(vocab_size=<the tokenizer's size>, n_positions, n_embd, n_layer, n_head)` under
`torch.manual_seed(seed)`, written with `save_pretrained` (config.json + model.safetensors) next to a copy
of the tokenizer as `tokenizer.json` (the file `gpt_jax.hf import` reads from the folder). bos/eos ids are
the tokenizer's end-of-text id when it has one. The model is a pipeline check (random weights: at chance
on every task), with learned positions up to `n_positions`, i.e. a `window` of that many tokens for
`gpt_jax.evaluate`, `gpt_jax.serve` and `gpt_jax.serving.lm_eval_lm`. Needs torch and transformers.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys


def make(tokenizer: str, out: str, n_positions=256, n_embd=128, n_layer=4, n_head=4, seed=0) -> dict:
    """Writes the folder; returns the config it wrote (as a dict)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt_jax.data.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.from_pretrained(tokenizer)
    eos = getattr(tok, "eos_id", None)
    config = GPT2Config(
        vocab_size=tok.vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    src = pathlib.Path(tokenizer)
    shutil.copy(src / "tokenizer.json" if src.is_dir() else src, out_dir / "tokenizer.json")
    return config.to_dict()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="a gpt_jax workdir's tokenizer.json (or its folder)")
    ap.add_argument("--out", required=True, help="the Hugging Face folder to write")
    ap.add_argument("--n_positions", type=int, default=256)
    ap.add_argument("--n_embd", type=int, default=128)
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_head", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before the model is built")
    a = ap.parse_args(argv)
    cfg = make(a.tokenizer, a.out, a.n_positions, a.n_embd, a.n_layer, a.n_head, a.seed)
    keys = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "eos_token_id")
    print(json.dumps({"out": a.out, **{k: cfg[k] for k in keys}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
