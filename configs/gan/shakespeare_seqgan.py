"""SeqGAN on tiny Shakespeare (characters): the CPU-recipe GPT (4/4/128, block 64), pretrained by maximum
likelihood, fine-tuned against a 2-layer/64-wide Transformer discriminator by REINFORCE (issue 19).

Run:      python -m gpt_jax.main --config=configs/gan/shakespeare_seqgan.py --workdir=runs/seqgan \
              --config.init_from=runs/shk_cpu
          (runs/shk_cpu: `python -m gpt_jax.main --config=configs/shakespeare_char_cpu.py --workdir=runs/shk_cpu`)
          Gumbel-softmax variant: --config.seqgan.estimator=gumbel; rollouts: --config.seqgan.rollouts=4
Evaluate: python -m gpt_jax.text_gan_eval --gan_workdir=runs/seqgan --mle_workdir=runs/shk_cpu \
              --oracle_workdir=<a bigger LM on the same data>
Time:     200 steps: 31 min wall / 207 s CPU (REINFORCE), 30 min / 282 s (Gumbel) on the shared 2-core host
          (load 10-25); compile is a few minutes of that.
Expect:   measured (experiments/results/adversarial.md, "Text GAN"): D stays at chance (val_d_accuracy
          0.47-0.53) for all 200 steps, so G moves by its mle_weight term only; its points match the
          MLE-only control (--config.seqgan.adversarial_weight=0) within 0.007 nats/char.
"""

from configs.base import base_config
from gpt_jax.tasks.seqgan import default_seqgan_section


def get_config():
    c = base_config()
    c.task.name = "seqgan"
    c.model.preset = "shakespeare-char-cpu"  # only used without init_from (tests); init_from brings its own
    c.model.dropout = 0.0
    c.seqgan = default_seqgan_section()
    c.seqgan.estimator = "reinforce"
    c.seqgan.baseline = "mean"
    c.seqgan.mle_weight = 0.2
    c.seqgan.g_optim.lr = 5e-5
    c.seqgan.d_optim.lr = 2e-4
    c.train.batch_size = 32
    c.train.num_steps = 200
    c.train.steps_per_call = 1
    c.train.log_every = 10
    c.train.eval_every = 50
    c.train.eval_batches = 8
    c.checkpoint.every = 50
    c.checkpoint.keep = 10
    c.sample.num_tokens = 0
    return c
