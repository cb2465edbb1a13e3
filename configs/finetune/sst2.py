"""SST-2 sentiment classification on a pretrained base; the PEFT method is a switch.

Run:      python -m gpt_jax.finetune --config=configs/finetune/sst2.py --init_from=runs/sst2_base \
              --workdir=runs/sst2_full [--config.peft.method=lora|adalora|adapters|prefix|frozen]
          (configs/finetune/sst2_<method>.py pin each method's settings; sst2_scratch.py has no base.)
Time:     4-7 min per method here (README "Fine-tuning results").
Expect:   full fine-tuning dev 79.5% / test 80.6% (as sst2_full); report.txt holds the classification report.
"""

from configs.base import base_config


def get_config():
    c = base_config()
    c.task.name = "classify"
    c.task.dataset = "sst2"
    c.task.pooling = "last"
    c.task.max_len = 48  # covers ~95% of dev sentences in this BPE
    c.task.early_stop_metric = "val_accuracy"
    c.task.patience = 4
    c.data.tokenizer = "bpe"  # used only from scratch (a base brings its own tokenizer)
    c.data.vocab_size = 4096
    c.model.dropout = 0.1
    c.train.batch_size = 32
    c.train.num_steps = 1000
    c.train.eval_every = 100
    c.train.log_every = 50
    c.train.steps_per_call = 50
    c.checkpoint.every = 500
    c.optim.lr = 5e-4
    c.optim.min_lr = 5e-5
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 0.01
    c.sample.num_tokens = 0
    return c
