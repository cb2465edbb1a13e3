"""`python -m gpt_jax.main`: the entry point gpt_jax.cli.train, under the name the README has always used."""

import sys

from gpt_jax.cli.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
