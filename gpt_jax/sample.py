"""`python -m gpt_jax.sample`: the entry point gpt_jax.cli.sample, under the name the README has always used."""

import sys

from gpt_jax.cli.sample import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
