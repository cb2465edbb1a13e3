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
    "tokenizers>=0.23.3",  # byte-level BPE: GPT-2's tokenizer and trained ones
    "safetensors>=0.8.0",  # HF weights, read and written through numpy (no torch)
    "ml_dtypes>=0.5",  # bfloat16 in numpy, for bf16 safetensors files (a jax dependency too)
    "matplotlib>=3.8",  # loss-curve PNGs (gpt_jax.analysis.plot, experiments.sweep), Agg backend
    "pillow>=10.0",  # image files in and out (gpt_jax.data.image_io, GAN sample grids)
    "fastapi>=0.115",  # gpt_jax.serve: the OpenAI-compatible server
    "uvicorn>=0.30",
    "grain>=0.2.18",  # data.pipeline='grain': pre-tokenized ArrayRecord shards, packing, checkpointed iterator
]

# The HF oracle for tests, and torch for reading pytorch_model.bin. torch is pinned to the CPU
# build these machines carry (2.13.0+cpu satisfies ==2.13.0 and sorts above PyPI's CUDA 2.13.0).
HF = ["transformers>=5.23.0", "torch==2.13.0"]
SENTENCEPIECE = ["sentencepiece>=0.2.3"]
# tests/test_notebooks.py executes colab/*.ipynb in a python3 kernel.
NOTEBOOKS = ["nbclient>=0.11.0", "nbformat>=5.11.1", "ipykernel>=7.4.0"]
# lm-evaluation-harness (in-process and over the server); [api] brings its HTTP client model.
EVAL = ["lm-eval[api]>=0.4.13"]
# The serving tests: the real OpenAI client against the server, and the chat page in headless chromium
# (the browser itself comes from apt: see .ci/run).
SERVE_TESTS = ["openai>=1.40", "httpx>=0.27", "playwright>=1.45"]

setup(
    name="gpt_jax",
    version="0.1.0",
    description="GPT-style language models in JAX/Flax: pretrain, fine-tune, sample, study.",
    packages=find_packages(include=["gpt_jax", "gpt_jax.*"]),
    package_data={"gpt_jax.serving": ["static/*.html"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # ruff pinned: its formatter's output changes between releases, and CI checks the format
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff==0.17.6"] + NOTEBOOKS + HF + SENTENCEPIECE + EVAL + SERVE_TESTS,
        "eval": EVAL,
        "hf": HF,
        "sentencepiece": SENTENCEPIECE,
        # TFDS's built-in datasets (tiny_shakespeare, c4, ...) need TensorFlow to prepare/read.
        "tf": ["tensorflow-cpu>=2.16"],
    },
)
