"""English base for the SST-2 fine-tuning table: a small GPT pretrained on SST-2's TRAIN sentences
(labels removed; dev/test never seen), BPE 4096 learned from that text.

Run:      python -m gpt_jax.main --config=configs/sst2_pretrain.py --workdir=runs/sst2_base
Time:     8.2 min here (1,200 steps of 32 x 64 tokens, 5.3k tokens/s).
Expect:   val loss 3.64 (BPE 4096); the base of README "Fine-tuning results". Muon + RoPE, the two
          largest ablation wins (README "Ablations"); with AdamW + learned positions it reaches 4.44.
"""

from configs.base import base_config


def get_config():
    c = base_config()
    c.data.dataset = "sst2_text"
    c.data.tokenizer = "bpe"
    c.data.vocab_size = 4096
    c.model.n_layer = 4
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 64
    c.model.pos = "rope"
    c.model.dropout = 0.0
    c.train.batch_size = 32
    c.train.num_steps = 1200
    c.train.eval_every = 300
    c.train.eval_batches = 20
    c.optim.name = "muon"  # Muon on the hidden kernels, AdamW on the rest, at this lr
    c.optim.lr = 2e-3
    c.optim.min_lr = 2e-4
    c.optim.warmup_steps = 100
    c.optim.b2 = 0.99
    c.sample.num_tokens = 60
    c.sample.prompt = "this movie "
    return c
