"""`python -m gpt_jax.finetune`: the entry point gpt_jax.cli.finetune, under the name the README has always used."""

import sys

from gpt_jax.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
