"""`python -m gpt_jax.evaluate`: the entry point gpt_jax.cli.evaluate, under the name the README has always used."""

import sys

from gpt_jax.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
