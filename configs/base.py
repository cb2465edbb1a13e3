"""Defaults shared by every config; a config file imports `base_config()` and sets what differs.

Every key a run can take is listed here, so a typo on the command line is an error, not a no-op.
"""
import ml_collections
from ml_collections import config_dict



# Functions, not constants: one placeholder object assigned to two fields would link them.
def NONE_INT():
    return config_dict.placeholder(int)


def NONE_FLOAT():
    return config_dict.placeholder(float)


def NONE_STR():
    return config_dict.placeholder(str)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    m = c.model
    m.preset = NONE_STR()            # gpt2 | gpt2-medium | gpt2-large | gpt2-xl | shakespeare-char[-cpu]
    m.vocab_size = NONE_INT()        # None: the tokenizer's vocab size
    m.block_size = NONE_INT()
    m.n_layer = NONE_INT()
    m.n_head = NONE_INT()
    m.n_kv_head = NONE_INT()         # grouped-query attention when < n_head
    m.n_embd = NONE_INT()
    m.d_ff = NONE_INT()              # None: 4 * n_embd
    m.dropout = 0.0
    m.bias = True
    m.pos = "learned"              # learned | sinusoidal | rope
    m.norm = "layernorm"           # layernorm | rmsnorm
    m.norm_eps = NONE_FLOAT()       # None: 1e-5 (GPT-2)
    m.mlp = "gelu"                 # gelu | swiglu
    m.tie_embeddings = True
    m.dtype = "float32"            # matmul operands: float32 | bfloat16 (f32 accumulation either way)
    m.param_dtype = "float32"
    m.attention = "auto"           # auto | dot_product | einsum
    m.remat = "none"               # none | full | dots
    m.scan_layers = False

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "tiny_shakespeare"  # a local corpus, or tfds:<name> (needs gpt_jax[tf] and internet)
    c.data.tokenizer = "char"      # char | byte | bpe | sentencepiece (needs gpt_jax[sentencepiece])
    c.data.vocab_size = NONE_INT()   # bpe/sentencepiece: ids to learn from the train split (e.g. 4096)
    c.data.tokenizer_path = NONE_STR()  # load, not learn: dir of vocab.json+merges.txt, a tokenizer.json, a .model
    c.data.manual_dir = NONE_STR()   # raw corpora; else $GPT_JAX_DATA_DIR, else ../shared/data
    c.data.tfds_dir = NONE_STR()     # prepared TFDS cache; else $GPT_JAX_TFDS_DIR, else ~/.cache/gpt_jax/tfds

    c.train = ml_collections.ConfigDict()
    t = c.train
    t.batch_size = 12              # global batch (sequences per optimizer step)
    t.num_steps = 2000
    t.grad_accum = 1
    t.steps_per_call = 10          # optimizer steps compiled into one call (lax.scan)
    t.log_every = 10
    t.eval_every = 250
    t.eval_batches = 20
    t.peak_flops = NONE_FLOAT()      # per device; None: measured (CPU) or datasheet (GPU/TPU)
    t.compile_cache_dir = "~/.cache/gpt_jax/jax_cache"  # persistent XLA cache: reruns skip compiling; "" = off

    c.optim = ml_collections.ConfigDict()
    o = c.optim
    o.name = "adamw"               # adamw | lion | muon (optax.contrib, Adam on embeddings) | sgd
    o.lr = 1e-3
    o.min_lr = 1e-4
    o.warmup_steps = 100
    o.decay_steps = NONE_INT()       # None: train.num_steps
    o.schedule = "cosine"          # cosine | linear | constant
    o.b1 = 0.9
    o.b2 = 0.99
    o.eps = 1e-8
    o.weight_decay = 0.1
    o.decay_embeddings = False
    o.clip = 1.0
    o.muon_ns_steps = 5            # muon: Newton-Schulz iterations per update (its cost grows with them, not with batch)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1               # -1: all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.cpu_devices = 0         # >0: split a CPU host into N XLA devices (data parallel over cores)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500
    c.checkpoint.keep = 2
    c.checkpoint.async_save = True

    # What is trained (gpt_jax.tasks): "lm" = pretraining; "classify" / "sft" = fine-tuning (gpt_jax.finetune).
    c.objective = "causal"          # lm only: causal | fim | mlm | prefix_lm (gpt_jax.objectives)
    c.init_from = NONE_STR()         # fine-tuning: a gpt_jax workdir or a Hugging Face GPT-2 folder (params only)

    c.task = ml_collections.ConfigDict()
    c.task.name = "lm"             # lm | classify | sft
    c.task.dataset = NONE_STR()      # classify: a labelled dataset (e.g. "sst2"); sft: a JSONL path or known name
    c.task.pooling = "last"        # classify: last (last non-pad token) | mean
    c.task.max_len = NONE_INT()      # tokens per example (None: model.block_size)
    c.task.template = "plain"      # sft: chat template (gpt_jax.chat): plain | chatml
    c.task.packing = True          # sft: several examples per row, attention kept within each
    c.task.early_stop_metric = NONE_STR()  # e.g. "val_accuracy" (higher is better) or "val_loss"
    c.task.patience = 0            # evals without improvement before stopping; 0 = never stop early

    c.peft = ml_collections.ConfigDict()
    p = c.peft
    p.method = "full"              # full | frozen | lora | adalora | adapters | prefix
    p.targets = "attn/(query|key|value|out_kernel)"  # lora/adalora: regex over param paths ("h_0/attn/query/kernel")
    p.rank = 8                     # lora rank; adalora: initial rank per matrix
    p.alpha = 16.0                 # lora/adalora scale alpha / rank
    p.dropout = 0.0
    p.lora_plus_ratio = 1.0        # lora: LoRA+ -- B learns at this multiple of the lr (1 = plain LoRA; paper: 16)
    p.target_rank = 4              # adalora: average rank per matrix at the end of the budget schedule
    p.init_warmup = 0.1            # adalora: fraction of steps before pruning starts
    p.final_warmup = 0.3           # adalora: fraction of steps at the end with the final budget
    p.mask_interval = 10           # adalora: steps between budget updates
    p.beta1 = 0.85                 # adalora: EMA of sensitivity
    p.beta2 = 0.85                 # adalora: EMA of uncertainty
    p.orth_reg = 0.1               # adalora: weight of ||P^T P - I||^2 + ||Q Q^T - I||^2
    p.adapter_dim = 16             # adapters: bottleneck width
    p.prefix_len = 8               # prefix tuning: trainable key/value slots per layer
    p.prefix_hidden = 0            # prefix tuning: >0 reparameterises the prefix through an MLP this wide

    c.sample = ml_collections.ConfigDict()
    c.sample.num_tokens = 200      # printed at the end of training; 0 to skip
    c.sample.prompt = "\n"
    c.sample.temperature = 0.8
    c.sample.top_k = 200
    return c
