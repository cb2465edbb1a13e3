"""`python -m gpt_jax.compress`: the entry point gpt_jax.cli.compress (quantize, prune)."""

import sys

from gpt_jax.cli.compress import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
