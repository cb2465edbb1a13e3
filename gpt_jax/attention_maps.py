"""`python -m gpt_jax.attention_maps`: the entry point gpt_jax.cli.attention_maps; the functions of gpt_jax.analysis.attention_maps
are importable from here too."""

import sys

from gpt_jax.analysis.attention_maps import *  # noqa: F403 - this module's public API since it existed
from gpt_jax.cli.attention_maps import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
