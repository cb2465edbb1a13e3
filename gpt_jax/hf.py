"""`python -m gpt_jax.hf import|export ...`: the entry point gpt_jax.cli.hf; the functions of
gpt_jax.interop.hf_workdir (and the HF weight mapping it re-exports) are importable from here too."""

import sys

from gpt_jax.cli.hf import main
from gpt_jax.interop.hf_workdir import *  # noqa: F403 - this module's public API since it existed

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
