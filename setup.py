"""gpt_jax: GPT-style language models in JAX/Flax — pretrain, fine-tune, sample, study."""
from setuptools import find_packages, setup

# Lower bounds are the versions tested together on 2026-11-23 (see README).
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "tensorflow-datasets>=4.9.10",
    "importlib_resources>=6.0",  # tfds imports it without declaring it
    "ml-collections>=1.1.0",
    "chex>=0.1.92",
    "absl-py>=2.1",
    "numpy>=2.0",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
]

setup(
    name="gpt_jax",
    version="0.1.0",
    description="GPT-style language models in JAX/Flax: pretrain, fine-tune, sample, study.",
    packages=find_packages(include=["gpt_jax", "gpt_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3.5"],
        # TFDS's built-in datasets (tiny_shakespeare, c4, ...) need TensorFlow to prepare/read.
        "tf": ["tensorflow-cpu>=2.16"],
    },
)
