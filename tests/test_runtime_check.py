"""gpt_jax.runtime_check: a runtime that declares a TPU or GPU while JAX sees only CPU is refused, and
the notebook install plan never replaces the runtime's jax. Fake /dev and /sys live under tmp_path."""

from __future__ import annotations

import pathlib

import pytest

from gpt_jax import runtime_check as rc


def fake_root(tmp_path: pathlib.Path, *files: tuple[str, str]) -> str:
    for rel, text in files:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize(
    "environ,files,expected",
    [
        ({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, [], "tpu"),  # Colab's TPU runtime
        ({"TPU_NAME": "local"}, [], "tpu"),
        ({}, [("dev/accel0", "")], "tpu"),  # a TPU VM (v4+)
        (
            {},
            [
                ("sys/bus/pci/devices/0000:00:04.0/vendor", "0x1ae0\n"),
                ("sys/bus/pci/devices/0000:00:04.0/device", "0x0063\n"),
            ],
            "tpu",
        ),  # v5e over vfio
        ({"COLAB_GPU": "1"}, [], "gpu"),
        ({}, [("dev/nvidia0", "")], "gpu"),
        (
            {},
            [
                ("sys/bus/pci/devices/0000:00:04.0/vendor", "0x8086\n"),
                ("sys/bus/pci/devices/0000:00:04.0/device", "0x0063\n"),
            ],
            None,
        ),
        ({"COLAB_GPU": ""}, [], None),  # Colab sets it empty on CPU runtimes
    ],
)
def test_declared_accelerator(tmp_path, environ, files, expected):
    declared, evidence = rc.declared_accelerator(environ, fake_root(tmp_path, *files))
    assert declared == expected
    assert bool(evidence) == (expected is not None)


def test_tpu_declared_but_jax_sees_cpu_fails_with_one_clear_message(tmp_path):
    with pytest.raises(rc.AcceleratorNotVisible) as e:
        rc.check_runtime("cpu", {"COLAB_TPU_ADDR": "10.0.0.2:8470"}, str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    assert "TPU is attached ($COLAB_TPU_ADDR=10.0.0.2:8470) but JAX sees only CPU" in msg
    assert 'pip install -U "jax[tpu]"' in msg and "Restart session" in msg


def test_gpu_declared_but_cpu_names_cuda_extra(tmp_path):
    with pytest.raises(rc.AcceleratorNotVisible, match=r"jax\[cuda12\]"):
        rc.check_runtime("cpu", {}, fake_root(tmp_path, ("dev/nvidia0", "")))


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_accelerator_seen_passes(tmp_path, backend):
    env = {"COLAB_TPU_ADDR": "x"} if backend == "tpu" else {"COLAB_GPU": "1"}
    assert rc.check_runtime(backend, env, str(tmp_path)) == (backend, backend)


def test_plain_cpu_runtime_passes_with_jax_backend(tmp_path):
    assert rc.check_runtime(None, {}, str(tmp_path)) == ("cpu", None)  # this machine: JAX on CPU


REQS = ["jax>=0.10.2", "flax>=0.12.8", "chex>=0.1.92", "numpy>=2.0", 'pytest>=8; extra == "dev"']


def versions(**have):
    return lambda name: have.get(name.replace("-", "_"))


def test_plan_keeps_runtime_jax_and_pins_it():
    """Colab TPU: jax 0.10.4 + libtpu installed, flax missing, chex too old -> only those two, jax pinned."""
    plans = rc.install_plan(REQS, "tpu", versions(jax="0.10.4", jaxlib="0.10.4", chex="0.1.80", numpy="2.1.0"))
    (args,) = plans
    assert args[:2] == ["flax>=0.12.8", "chex>=0.1.92"]
    pins = [pathlib.Path(a).read_text().strip() for a in args[3::2]]
    assert args[2::2] == ["--constraint", "--constraint"] and pins == ["jax==0.10.4", "jaxlib==0.10.4"]
    assert not any(a.startswith(("jax[", "jax>=", "pytest")) for a in args)


def test_plan_nothing_missing_installs_nothing():
    assert (
        rc.install_plan(REQS, "tpu", versions(jax="0.11", jaxlib="0.11", flax="0.12.8", chex="0.1.92", numpy="2.0"))
        == []
    )


@pytest.mark.parametrize(
    "declared,spec", [("tpu", "jax[tpu]>=0.10.2"), ("gpu", "jax[cuda12]>=0.10.2"), (None, "jax>=0.10.2")]
)
def test_plan_old_jax_gets_the_matching_extra(declared, spec):
    plans = rc.install_plan(
        REQS, declared, versions(jax="0.4.30", jaxlib="0.4.30", flax="0.12.8", chex="0.1.92", numpy="2.0")
    )
    assert plans == [["-U", spec]]


def test_install_missing_runs_pip_only_for_the_plan(monkeypatch):
    monkeypatch.setattr(rc.importlib.metadata, "requires", lambda dist: ["jax>=0.1", "surely-not-installed-pkg>=1.0"])
    ran = []
    assert rc.install_missing(run=ran.append) == ran
    assert ran and ran[0][0] == "surely-not-installed-pkg>=1.0"
