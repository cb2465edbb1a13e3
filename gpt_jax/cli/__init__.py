"""Entry points (`python -m gpt_jax.cli.<name>`, or the older `python -m gpt_jax.<name>`): argument parsing
and printing only, on top of the library. They share one flag parser, gpt_jax.cli.flags."""
