"""GPT-2 small (124M) with GPT-2's BPE on a TFDS web-text corpus, streamed from token shards (grain).

Run:      pip install -e ".[tf]"  # only to prepare a TFDS built-in dataset (c4); shards are read without TF
          export GPT_JAX_GPT2_TOKENIZER=/path/to/gpt2  # GPT-2's vocab.json + merges.txt (or tokenizer.json)
          python -m gpt_jax.main --config=configs/gpt2_124m.py --workdir=gs://BUCKET/gpt2_124m
          (a local stand-in corpus: --config.data.dataset=file:/path/corpus.txt)
Time:     not run at full size here (no accelerator on the project's machines); 600k steps of 491,520
          tokens. One real-size step (batch 8 x 1024, 8 fake CPU devices, FSDP): see experiments/results/data.md.
Expect:   val loss ~2.85-2.9 on OpenWebText-like text after 600k steps (nanoGPT's reference run).
Note:     GPT-2's own vocab.json/merges.txt are not staged offline on the project's machines. With
          $GPT_JAX_GPT2_TOKENIZER unset, a byte-level BPE in GPT-2's format (50,257 ids, <|endoftext|> last)
          is learned from the first data.tokenizer_sample_chars chars of the train split instead.
          The corpus is tokenized once into ArrayRecord shards (data.shards_dir), packed into 1024-token
          rows with segment ids, and the reader's position is saved in every checkpoint.
"""

import os

from configs.base import base_config

GPT2_TOKENIZER_ENV = "GPT_JAX_GPT2_TOKENIZER"


def get_config():
    c = base_config()
    c.model.preset = "gpt2"
    c.model.vocab_size = 50304  # 50257 padded to a multiple of 64 (nanoGPT): faster matmuls
    c.model.dtype = "bfloat16"
    c.model.remat = "dots"
    c.model.scan_layers = True
    c.data.dataset = "tfds:c4/en"  # any tfds text dataset, or file:<path> (.txt / .jsonl[.gz])
    c.data.pipeline = "grain"
    c.data.tokenizer = "bpe"
    gpt2_files = os.environ.get(GPT2_TOKENIZER_ENV)
    if gpt2_files:
        c.data.tokenizer_path = gpt2_files
    else:
        c.data.vocab_size = 50257  # learned in GPT-2's format from a sample (see Note)
    c.data.grain_workers = 4
    c.train.batch_size = 480  # x 1024 tokens = 491,520 tokens per step
    c.train.grad_accum = 1
    c.train.num_steps = 600_000
    c.train.steps_per_call = 1
    c.train.log_every = 100
    c.train.eval_every = 2000
    c.train.eval_batches = 100
    c.optim.lr = 6e-4
    c.optim.min_lr = 6e-5
    c.optim.warmup_steps = 2000
    c.optim.b2 = 0.95
    c.optim.weight_decay = 0.1
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.checkpoint.every = 2000
    c.checkpoint.keep = 3
    c.sample.prompt = "Hello, I'm a language model,"
    return c
