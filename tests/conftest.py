import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `configs` is not an installed package; plain `pytest` needs this
    sys.path.insert(0, str(REPO))

# The full tiny run that several test modules inspect (metrics, checkpoints, resume, workdir guard).
TINY_RUN_STEPS = 40


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """A per-session persistent XLA cache: the several short training runs of the suite (fresh
    processes' worth of jits: init, K-step scan, eval) compile once instead of once per run.
    Only compiles over 0.3 s are stored, so eager ops are not."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", None)


@pytest.fixture(scope="session")
def tfds_cache(tmp_path_factory) -> pathlib.Path:
    """One prepared-TFDS cache for the session (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("tfds_cache")


@pytest.fixture
def tiny_config(tfds_cache):
    """A fresh configs/tiny.py ConfigDict per call, TFDS cache in tmp, small eval/sample."""
    from gpt_jax import run_config

    def make():
        c = run_config.load_config(str(REPO / "configs" / "tiny.py"))
        c.data.tfds_dir = str(tfds_cache)
        c.train.eval_batches = 2
        c.sample.num_tokens = 0
        return c

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tfds_cache):
    """configs/tiny.py trained uninterrupted for 40 steps: (config, workdir, summary).

    checkpoint every 20, steps_per_call 10, log every 10, eval every 20, 8 sample tokens.
    """
    from gpt_jax import run_config
    from gpt_jax.trainer import train_and_evaluate

    c = run_config.load_config(str(REPO / "configs" / "tiny.py"))
    c.data.tfds_dir = str(tfds_cache)
    c.train.num_steps = TINY_RUN_STEPS
    c.train.steps_per_call = 10
    c.train.log_every = 10
    c.train.eval_every = 20
    c.train.eval_batches = 2
    c.checkpoint.every = 20
    c.sample.num_tokens = 8
    workdir = tmp_path_factory.mktemp("tiny_run")
    summary = train_and_evaluate(c, workdir)
    return c, workdir, summary


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "accelerator: needs a GPU or TPU (skips on CPU); benchmarks/device_check.sh runs them"
    )
