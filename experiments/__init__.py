"""Ablation tooling: `python -m experiments.sweep` (see experiments/README.md)."""
