"""`python -m gpt_jax.chat`: the entry point gpt_jax.cli.chat; the session API of gpt_jax.chat_session is
importable from here too."""

import sys

from gpt_jax.chat_session import *  # noqa: F403 - this module's public API since it existed
from gpt_jax.cli.chat import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
