"""`python -m gpt_jax.serve`: the entry point gpt_jax.cli.serve."""

import sys

from gpt_jax.cli.serve import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
