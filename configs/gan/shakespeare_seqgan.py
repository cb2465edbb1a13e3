"""SeqGAN on tiny Shakespeare (characters): the CPU-recipe GPT (4/4/128, block 64), pretrained by maximum
likelihood, fine-tuned against a Transformer discriminator by REINFORCE (issue 19).

Run:      python -m gpt_jax.main --config=configs/gan/shakespeare_seqgan.py --workdir=runs/seqgan \
              --config.init_from=runs/shk_cpu --config.seqgan.discriminator.init=generator \
              --config.seqgan.d_pretrain_steps=100 --config.train.num_steps=160 \
              --config.train.eval_every=20 --config.checkpoint.every=20
          (the measured recipe: D = a copy of the generator, trained alone for 100 steps, then 60 D/G steps;
          without those flags: a random 2-layer 64-wide D, no pretraining, 200 steps, whose D stayed at chance.
          runs/shk_cpu: `python -m gpt_jax.main --config=configs/shakespeare_char_cpu.py --workdir=runs/shk_cpu
          --config.train.num_steps=1500`.) MLE-only control: --config.seqgan.adversarial_weight=0.0;
          Gumbel-softmax variant: --config.seqgan.estimator=gumbel; rollouts: --config.seqgan.rollouts=4
Evaluate: python -m gpt_jax.text_gan_eval --gan_workdir=runs/seqgan --gan_workdir=runs/seqgan_ctrl \
              --mle_workdir=runs/shk_cpu --oracle_workdir=<a bigger LM on the same data> --all_checkpoints
Time:     the measured recipe ran as two pieces on the shared 2-core Xeon (load 5-9.5): the 100 D-only steps
          653 s wall / 300 s CPU, steps 100-160 641 s / 268 s (control: 790 s / 336 s); a 4-layer D step
          costs ~5x an MLE step (2 x 32 rows of 64 characters).
Expect:   measured (experiments/results/adversarial.md, "Text GAN"): D accuracy 0.58-0.64 on 512 held-out
          rows after pretraining (loss 1.30-1.33 vs ln 4 = 1.386), 0.51-0.62 during the GAN steps; G's
          held-out NLL 1.9483 vs the control's 1.9495 at step 160 (no measurable GAN effect at this budget).
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
