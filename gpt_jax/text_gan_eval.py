"""`python -m gpt_jax.text_gan_eval`: the entry point gpt_jax.cli.text_gan_eval."""

import sys

from gpt_jax.cli.text_gan_eval import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
