"""`python -m gpt_jax.plot`: the entry point gpt_jax.cli.plot; the functions of gpt_jax.analysis.plot
are importable from here too."""

import sys

from gpt_jax.analysis.plot import *  # noqa: F403 - this module's public API since it existed
from gpt_jax.cli.plot import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
