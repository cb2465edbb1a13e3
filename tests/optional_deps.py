"""Optional test dependencies (the HF oracle: torch + transformers; sentencepiece).

Locally a missing one skips the tests that need it; in CI (CI=true, where `.[dev]` installs them)
it is a failure, so those tests can never silently stop running.
"""

from __future__ import annotations

import importlib
import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(module: str, install: str = 'pip install -e ".[dev]"'):
    """`pytest.importorskip(module)`, but a failure when CI=true."""
    if not in_ci():
        return pytest.importorskip(module, reason=f"{module} not installed ({install})")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"CI=true but {module} is not importable ({e}); CI must run `{install}`.")
