"""GPT-2 small (124M) on a TFDS web-text corpus, for a GPU/TPU with data (nanoGPT's train_gpt2 recipe).

Run:      pip install -e ".[tf]"  # TFDS's built-in datasets need TensorFlow to prepare/read
          python -m gpt_jax.main --config=configs/gpt2_124m.py --workdir=gs://BUCKET/gpt2_124m
Time:     not run here (no accelerator on the project's machines); 600k steps of 491,520 tokens.
Expect:   val loss ~2.85-2.9 on OpenWebText-like text after 600k steps (nanoGPT's reference run).
Note:     the byte tokenizer stands in until the GPT-2 BPE tokenizer lands (vocab padded to 50304).
"""

from configs.base import base_config


def get_config():
    c = base_config()
    c.model.preset = "gpt2"
    c.model.vocab_size = 50304  # 50257 padded to a multiple of 64 (nanoGPT): faster matmuls
    c.model.dtype = "bfloat16"
    c.model.remat = "dots"
    c.model.scan_layers = True
    c.data.dataset = "tfds:c4/en"  # needs internet + gpt_jax[tf]; any tfds text dataset works
    c.data.tokenizer = "byte"
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
