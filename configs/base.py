"""The base config every config file starts from; its keys and defaults live in gpt_jax/base_config.py."""

from gpt_jax.base_config import NONE_FLOAT, NONE_INT, NONE_STR, base_config

__all__ = ["NONE_FLOAT", "NONE_INT", "NONE_STR", "base_config"]
