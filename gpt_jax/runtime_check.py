"""Notebook runtimes: install gpt_jax without replacing the runtime's jax, and refuse to go on when a
TPU or GPU is attached but JAX sees only CPU.

Colab's TPU and GPU runtimes come with a jax/jaxlib (and libtpu) built for their accelerator; a plain
`pip install -e .` may replace it with a CPU-only one, after which JAX says "TPU present but libtpu
not installed, falling back to cpu" and the notebook quietly trains on CPU. So the install cell
installs gpt_jax with --no-deps, then only the requirements that are missing or too old, pinned to the
installed jax/jaxlib (`install_plan`), and `check_runtime` fails loudly on an accelerator JAX cannot see.

Only the standard library at import time: the install cell imports this before the dependencies exist.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence

# jax's own probe (jax/_src/hardware_utils.py): Google's PCI vendor id and the TPU device ids
GOOGLE_PCI_VENDOR = "0x1ae0"
TPU_PCI_DEVICES = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}
# Environment variables Colab and TPU VMs set on accelerator runtimes
TPU_ENV = ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID")
GPU_ENV = ("COLAB_GPU",)
JAX_PACKAGES = ("jax", "jaxlib", "libtpu", "libtpu-nightly", "jax-cuda12-plugin", "jax-cuda12-pjrt")
JAX_EXTRA = {"tpu": "tpu", "gpu": "cuda12"}


class AcceleratorNotVisible(RuntimeError):
    """A TPU or GPU is attached, but JAX runs on CPU."""


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def declared_accelerator(environ: Mapping[str, str] | None = None, root: str = "/") -> tuple[str | None, str]:
    """("tpu" | "gpu" | None, the evidence): what the runtime says is attached, whatever JAX sees.

    `root` and `environ` are seams for tests (a fake /dev and /sys under a temporary folder)."""
    environ = os.environ if environ is None else environ
    for name in TPU_ENV:
        if environ.get(name):
            return "tpu", f"${name}={environ[name]}"
    accel = sorted(glob.glob(os.path.join(root, "dev", "accel*")))
    if accel:
        return "tpu", accel[0].removeprefix(root.rstrip("/"))
    for vendor in sorted(glob.glob(os.path.join(root, "sys", "bus", "pci", "devices", "*", "vendor"))):
        device = _read(os.path.join(os.path.dirname(vendor), "device"))
        if _read(vendor) == GOOGLE_PCI_VENDOR and device in TPU_PCI_DEVICES:
            return "tpu", f"PCI device {GOOGLE_PCI_VENDOR}:{device}"
    for name in GPU_ENV:
        if environ.get(name):
            return "gpu", f"${name}={environ[name]}"
    for dev in ("nvidia0", "nvidiactl"):
        if os.path.exists(os.path.join(root, "dev", dev)):
            return "gpu", f"/dev/{dev}"
    return None, ""


def check_runtime(
    backend: str | None = None, environ: Mapping[str, str] | None = None, root: str = "/"
) -> tuple[str, str | None]:
    """(JAX's backend, the declared accelerator); raises AcceleratorNotVisible when the runtime has a
    TPU or GPU but JAX's backend is CPU. `backend` defaults to `jax.default_backend()`."""
    declared, evidence = declared_accelerator(environ, root)
    if backend is None:
        import jax  # not at import time: the install cell imports this module before jax may be there

        backend = jax.default_backend()
    if declared is not None and backend == "cpu":
        extra = JAX_EXTRA[declared]
        raise AcceleratorNotVisible(
            f"a {declared.upper()} is attached ({evidence}) but JAX sees only CPU: the installed jax/jaxlib "
            f"cannot drive it (was jax replaced by a CPU build?). Fix: "
            f'pip install -U "jax[{extra}]", then Runtime > Restart session and run the notebook again.'
        )
    return backend, declared


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _minimum(requirement: str) -> tuple[int, ...] | None:
    m = re.search(r">=\s*([0-9][0-9.]*)", requirement.split(";")[0])
    return _version_tuple(m.group(1)) if m else None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_plan(
    requirements: Sequence[str],
    declared: str | None,
    version_of: Callable[[str], str | None] = installed_version,
) -> list[list[str]]:
    """The `pip install` argument lists that complete an install made with --no-deps.

    jax too old or absent: the `jax[tpu]`/`jax[cuda12]` extra for the declared accelerator, which brings
    a matching jaxlib (and libtpu). Every other requirement that is absent or below its minimum is
    installed with the installed jax/jaxlib pinned, so pip refuses rather than swaps them."""
    plans, pins, missing = [], [], []
    for req in requirements:
        if ";" in req:  # extras ('... ; extra == "dev"') are not part of the install
            continue
        name, minimum = _name(req), _minimum(req)
        have = version_of(name)
        if name == "jax":
            if have is None or (minimum and _version_tuple(have) < minimum):
                extra = JAX_EXTRA.get(declared or "")
                spec = f"jax[{extra}]" if extra else "jax"
                plans.append(["-U", spec + (f">={'.'.join(map(str, minimum))}" if minimum else "")])
            continue
        if have is None or (minimum and _version_tuple(have) < minimum):
            missing.append(req)
    if not plans:  # keep the runtime's jax/jaxlib exactly
        pins = [f"{p}=={v}" for p in ("jax", "jaxlib") if (v := version_of(p))]
    if missing:
        plans.append([*missing, *(a for pin in pins for a in ("--constraint", _constraint_file(pin)))])
    return plans


def _constraint_file(pin: str) -> str:
    """pip takes constraints only from files; one per pin, under the temporary folder."""
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"gpt_jax_pin_{_name(pin)}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(pin + "\n")
    return path


def install_missing(dist: str = "gpt_jax", run: Callable[[list[str]], object] | None = None) -> list[list[str]]:
    """Run `install_plan` for `dist`'s requirements with this interpreter's pip; returns the plans run.
    Call after `pip install --no-deps -e .`."""
    import subprocess

    declared, _ = declared_accelerator()
    plans = install_plan(importlib.metadata.requires(dist) or [], declared)
    run = run or (lambda args: subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True))
    for args in plans:
        run(args)
    return plans
