"""`python -m gpt_jax.gan_eval`: the entry point gpt_jax.cli.gan_eval."""

import sys

from gpt_jax.cli.gan_eval import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
