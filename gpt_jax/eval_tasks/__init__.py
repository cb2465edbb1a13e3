"""Evaluation tasks for `python -m gpt_jax.evaluate --task=NAME` (see registry.py); imports nothing."""
