"""Defaults shared by every run config; a config file (configs/*.py) calls `base_config()` and sets
what differs.

Every key a run can take is listed here, so a typo on the command line is an error, not a no-op.
It lives in the package so library code (gpt_jax.hf's workdir import) needs no `configs/` folder.
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


def gan_adam(lr: float, clip: float) -> ml_collections.ConfigDict:
    """An optim section for one GAN sub-model: DCGAN's Adam (b1 0.5, constant lr, no weight decay)."""
    return ml_collections.ConfigDict(
        dict(
            name="adamw",
            lr=lr,
            min_lr=0.0,
            warmup_steps=0,
            decay_steps=None,
            schedule="constant",
            b1=0.5,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            decay_embeddings=False,
            clip=clip,
        )  # fmt: skip
    )


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    m = c.model
    m.family = "gpt"  # model family (gpt_jax.models.registry); the keys below are the gpt family's
    m.preset = NONE_STR()  # gpt2 | gpt2-medium | gpt2-large | gpt2-xl | shakespeare-char[-cpu]
    m.vocab_size = NONE_INT()  # None: the tokenizer's vocab size
    m.block_size = NONE_INT()
    m.n_layer = NONE_INT()
    m.n_head = NONE_INT()
    m.n_kv_head = NONE_INT()  # grouped-query attention when < n_head
    m.n_embd = NONE_INT()
    m.d_ff = NONE_INT()  # None: 4 * n_embd
    m.dropout = 0.0
    m.bias = True
    m.pos = "learned"  # learned | sinusoidal | rope
    m.norm = "layernorm"  # layernorm | rmsnorm
    m.norm_eps = NONE_FLOAT()  # None: 1e-5 (GPT-2)
    m.mlp = "gelu"  # gelu | swiglu
    m.tie_embeddings = True
    m.dtype = "float32"  # matmul operands: float32 | bfloat16 (f32 accumulation either way)
    m.param_dtype = "float32"
    m.attention = "auto"  # auto | dot_product | einsum
    m.remat = "none"  # none | full | dots
    m.scan_layers = False
    m.norm_grad = "custom"  # custom (hand-written norm VJP, cheaper on XLA:CPU) | autodiff (for jax.jvp)

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "tiny_shakespeare"  # a local corpus, or tfds:<name> (needs gpt_jax[tf] and internet)
    c.data.tokenizer = "char"  # char | byte | bpe | sentencepiece (needs gpt_jax[sentencepiece])
    c.data.vocab_size = NONE_INT()  # bpe/sentencepiece: ids to learn from the train split (e.g. 4096)
    c.data.tokenizer_path = NONE_STR()  # load, not learn: dir of vocab.json+merges.txt, a tokenizer.json, a .model
    c.data.manual_dir = NONE_STR()  # raw corpora; else $GPT_JAX_DATA_DIR, else ../shared/data
    c.data.tfds_dir = NONE_STR()  # prepared TFDS cache; else $GPT_JAX_TFDS_DIR, else ~/.cache/gpt_jax/tfds
    c.data.pipeline = "random"  # random: windows of a corpus held in memory | grain: token shards streamed from disk
    c.data.shards_dir = NONE_STR()  # grain: token shards cache; else <tfds_dir>/token_shards
    c.data.grain_workers = 0  # grain: reader worker processes (0: read in the training process)
    c.data.packing_bins = 64  # grain: rows packed at once (more: less padding)
    c.data.tokenizer_sample_chars = 10_000_000  # grain: chars of the train split a bpe/sentencepiece is learned from

    c.train = ml_collections.ConfigDict()
    t = c.train
    t.batch_size = 12  # global batch (sequences per optimizer step)
    t.num_steps = 2000
    t.grad_accum = 1
    t.steps_per_call = 10  # optimizer steps compiled into one call (lax.scan)
    t.log_every = 10
    t.eval_every = 250
    t.eval_batches = 20
    t.peak_flops = NONE_FLOAT()  # per device; None: measured (CPU) or datasheet (GPU/TPU)
    t.compile_cache_dir = "~/.cache/gpt_jax/jax_cache"  # persistent XLA cache: reruns skip compiling; "" = off
    t.on_nonfinite = "stop"  # non-finite loss/grad norm: stop (exit 3, nothing saved) | skip (step not applied)
    t.max_nonfinite_skips = 10  # skip: stop once more steps than this were skipped in all
    t.allow_changes = False  # resume even if the config changes the trajectory (seed, batch, optimizer, ...)

    c.optim = ml_collections.ConfigDict()
    o = c.optim
    o.name = "adamw"  # adamw | lion | muon (optax.contrib, Adam on embeddings) | sgd
    o.lr = 1e-3
    o.min_lr = 1e-4
    o.warmup_steps = 100
    o.decay_steps = NONE_INT()  # None: train.num_steps
    o.schedule = "cosine"  # cosine | linear | constant
    o.b1 = 0.9
    o.b2 = 0.99
    o.eps = 1e-8
    o.weight_decay = 0.1
    o.decay_embeddings = False
    o.clip = 1.0
    o.muon_ns_steps = 5  # muon: Newton-Schulz iterations per update (its cost grows with them, not with batch)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.cpu_devices = 0  # >0: split a CPU host into N XLA devices (data parallel over cores)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500
    c.checkpoint.keep = 2
    c.checkpoint.async_save = True

    # What is trained (gpt_jax.tasks): "lm" = pretraining; "classify" / "sft" = fine-tuning (gpt_jax.finetune).
    c.objective = "causal"  # lm only: causal | fim | mlm | prefix_lm (gpt_jax.objectives)
    c.objectives = ml_collections.ConfigDict()  # each objective's own options, used when it is the one chosen
    c.objectives.fim = ml_collections.ConfigDict({"fim_rate": 0.5, "spm_rate": 0.0})  # rows rearranged; of those, SPM
    c.objectives.mlm = ml_collections.ConfigDict({"mask_rate": 0.15, "mask_token_rate": 0.8, "random_token_rate": 0.1})
    c.init_from = NONE_STR()  # fine-tuning: a gpt_jax workdir or a Hugging Face GPT-2 folder (params only)

    c.task = ml_collections.ConfigDict()
    c.task.name = "lm"  # lm | classify | sft
    c.task.dataset = NONE_STR()  # classify: a labelled dataset (e.g. "sst2"); sft: a JSONL path or known name
    c.task.pooling = "last"  # classify: last (last non-pad token) | mean
    c.task.max_len = NONE_INT()  # tokens per example (None: model.block_size)
    c.task.template = "plain"  # sft: chat template (gpt_jax.chat): plain | chatml
    c.task.packing = True  # sft: several examples per row, attention kept within each
    c.task.early_stop_metric = NONE_STR()  # e.g. "val_accuracy" (higher is better) or "val_loss"
    c.task.patience = 0  # evals without improvement before stopping; 0 = never stop early

    # PEFT (gpt_jax.peft): the method, and each method's options in its own section (only the named one is read).
    c.peft = ml_collections.ConfigDict()
    c.peft.method = "full"  # full | frozen | lora | adalora | adapters | prefix

    c.peft.lora = ml_collections.ConfigDict()
    lo = c.peft.lora
    lo.targets = "attn/(query|key|value|out_kernel)"  # regex over param paths ("h_0/attn/query/kernel")
    lo.rank = 8
    lo.alpha = 16.0  # scale alpha / rank
    lo.dropout = 0.0  # rank dropout
    lo.plus_ratio = 1.0  # LoRA+: B learns at this multiple of the lr (1 = plain LoRA; paper: 16)

    c.peft.adalora = ml_collections.ConfigDict()
    ada = c.peft.adalora
    ada.targets = "attn/(query|key|value|out_kernel)"
    ada.rank = 8  # initial rank per matrix
    ada.target_rank = 4  # average rank per matrix at the end of the budget schedule
    ada.alpha = 16.0  # scale alpha / rank
    ada.dropout = 0.0  # rank dropout on the singular values
    ada.init_warmup = 0.1  # fraction of steps before pruning starts
    ada.final_warmup = 0.3  # fraction of steps at the end with the final budget
    ada.mask_interval = 10  # steps between budget updates
    ada.beta1 = 0.85  # EMA of sensitivity
    ada.beta2 = 0.85  # EMA of uncertainty
    ada.orth_reg = 0.1  # weight of ||P^T P - I||^2 + ||Q Q^T - I||^2

    c.peft.adapters = ml_collections.ConfigDict()
    c.peft.adapters.dim = 16  # bottleneck width

    c.peft.prefix = ml_collections.ConfigDict()
    c.peft.prefix.length = 8  # trainable key/value slots per layer
    c.peft.prefix.hidden = 0  # >0: the slots come from an MLP this wide (Li & Liang's reparameterisation)

    c.sample = ml_collections.ConfigDict()
    c.sample.num_tokens = 200  # printed at the end of training; 0 to skip
    c.sample.prompt = "\n"
    c.sample.temperature = 0.8
    c.sample.top_k = 200
    return c
