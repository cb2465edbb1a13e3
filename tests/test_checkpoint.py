"""Tests for gpt_jax.checkpoint (Orbax wrapper + SIGTERM flag)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from gpt_jax.checkpoint import Checkpointer, abstract_like
from gpt_jax.preemption import install_sigterm_handler

REPO = Path(__file__).resolve().parents[1]


_TX = optax.adamw(1e-3)


@jax.jit
def _adam_step(params, opt_state):
    return _TX.update(jax.tree.map(jnp.ones_like, params), opt_state, params)[1]


def make_state(seed: int = 0, scale: int = 1) -> dict:
    """TrainState-like dict: params, adamw opt_state (NamedTuples), int32 step, typed key.

    Built from numpy + one jit: eager jax.random/optax ops cost seconds of compiles here.
    """
    r = np.random.default_rng(seed)
    params = {
        "wte": jnp.asarray(r.standard_normal((64 * scale, 32), np.float32)),
        "blocks": {"w": jnp.asarray(r.standard_normal((32, 16), np.float32)), "b": jnp.zeros(16)},
    }
    opt_state = _adam_step(params, _TX.init(params))  # non-trivial mu/nu/count
    key_data = r.integers(0, 2**32, (2,), dtype=np.uint32)
    return {
        "params": params,
        "opt_state": opt_state,
        "step": jnp.array(7 + seed, jnp.int32),
        "rng": jax.random.wrap_key_data(jnp.asarray(key_data)),  # == a jax.random.key(...)
    }


def assert_bitwise_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert str(jax.random.key_impl(x)) == str(jax.random.key_impl(y))
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.mark.parametrize("async_save", [False, True])
def test_roundtrip_bitwise(tmp_path, async_save):
    state = make_state()
    meta = {"step": 7, "data_seed": 3, "config_hash": "abc123"}
    with Checkpointer(tmp_path, save_every=1, keep=3, async_save=async_save) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.maybe_save(7, state, meta)
        ckpt.wait()
        assert ckpt.latest_step() == 7
        restored, rmeta = ckpt.restore(abstract_like(state))
    assert rmeta == meta
    assert_bitwise_equal(restored, state)
    # optax states come back as their NamedTuple types, the key as a typed key.
    assert type(restored["opt_state"][0]) is type(state["opt_state"][0])
    assert restored["rng"].dtype == state["rng"].dtype
    # The restored key is usable and gives the same stream.
    assert np.array_equal(
        jax.random.key_data(jax.random.split(restored["rng"])),
        jax.random.key_data(jax.random.split(state["rng"])),
    )


def test_restore_needs_shardings(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.maybe_save(1, state, {})
        bare = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        with pytest.raises(ValueError, match="sharding"):
            ckpt.restore(bare)
        with pytest.raises(FileNotFoundError):
            Checkpointer(tmp_path / "empty", save_every=1).restore(abstract_like(state))


def test_save_every_and_keep_last_k(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, save_every=2, keep=2, async_save=True) as ckpt:
        saved = [s for s in range(10) if ckpt.maybe_save(s, state, {"step": s})]
        assert saved == [0, 2, 4, 6, 8]
        assert ckpt.maybe_save(9, state, {"step": 9}, force=True)
        # Same step again (periodic + preemption save at one step): skipped, no error.
        assert not ckpt.maybe_save(9, state, {"step": 9}, force=True)
        ckpt.wait()
        assert ckpt.steps() == [8, 9]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["8", "9"]
        _, meta = ckpt.restore(abstract_like(state), step=8)
        assert meta == {"step": 8}


def test_latest_step_ignores_partial_and_tmp_dirs(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, save_every=5, keep=3, async_save=False) as ckpt:
        ckpt.maybe_save(5, state, {"step": 5})
    # What a process killed mid-save leaves (Orbax writes <step>.orbax-checkpoint-tmp and
    # renames on commit) plus a half-copied step dir without Orbax's commit marker.
    tmp = tmp_path / "10.orbax-checkpoint-tmp"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "garbage").write_bytes(b"\x00" * 100)
    (tmp_path / "12" / "state").mkdir(parents=True)

    reader = Checkpointer(tmp_path, save_every=5, read_only=True)
    assert reader.latest_step() == 5
    restored, meta = reader.restore(abstract_like(state))
    assert_bitwise_equal(restored, state)
    assert meta == {"step": 5}
    assert tmp.exists()  # a read-only reader never deletes (might be a live trainer's save)
    reader.close()

    # A resumed trainer cleans the leftover tmp dir and can save that step again.
    state2 = make_state(seed=1)
    with Checkpointer(tmp_path, save_every=5, keep=3, async_save=True) as ckpt:
        assert ckpt.latest_step() == 5
        assert ckpt.maybe_save(10, state2, {"step": 10})
        ckpt.wait()
        assert not tmp.exists()
        assert ckpt.latest_step() == 10
        assert_bitwise_equal(ckpt.restore(abstract_like(state2))[0], state2)
        assert_bitwise_equal(ckpt.restore(abstract_like(state), step=5)[0], state)


def test_process_killed_during_async_save(tmp_path):
    """SIGKILL right after an async save returns: the previous checkpoint stays intact."""
    script = textwrap.dedent(
        f"""
        import os, signal
        import jax.numpy as jnp
        from gpt_jax.checkpoint import Checkpointer
        ckpt = Checkpointer({str(tmp_path)!r}, save_every=1, keep=5, async_save=True)
        ckpt.maybe_save(1, {{"w": jnp.full((2048, 1024), 1.0)}}, {{"step": 1}})
        ckpt.wait()
        ckpt.maybe_save(2, {{"w": jnp.full((2048, 1024), 2.0)}}, {{"step": 2}})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    abstract = {"w": jax.ShapeDtypeStruct((2048, 1024), jnp.float32, sharding=SingleDeviceSharding(jax.devices()[0]))}
    ckpt = Checkpointer(tmp_path, save_every=1, read_only=True)
    latest = ckpt.latest_step()
    assert latest in (1, 2)  # 2 only if the background write won the race against SIGKILL
    for step in range(1, latest + 1):
        state, meta = ckpt.restore(abstract, step=step)
        assert meta == {"step": step}
        assert np.all(np.asarray(state["w"]) == float(step))
    ckpt.close()


def _mesh(n: int, shape=None, names=("data",)):
    shape = shape or (n,)
    return jax.sharding.Mesh(np.array(jax.devices()[:n]).reshape(shape), names)


def test_restore_onto_different_mesh(tmp_path):
    if jax.device_count() < 8:  # conftest normally sets XLA_FLAGS; else run in a fresh process
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
        node = f"{__file__}::test_restore_onto_different_mesh"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout.decode()[-3000:]
        return

    state = make_state(scale=2)  # wte: (128, 32)

    def shardings(tree, mesh, axis):
        # Shard dim 0 along ``axis`` where it divides, replicate the rest (keys included).
        size = mesh.shape[axis]
        return jax.tree.map(lambda x: NamedSharding(mesh, P(axis) if x.ndim and x.shape[0] % size == 0 else P()), tree)

    # 1 device (replicated) -> 8 devices sharded along "data".
    mesh1, mesh8 = _mesh(1), _mesh(8)
    on1 = jax.device_put(state, jax.tree.map(lambda _: NamedSharding(mesh1, P()), state))
    with Checkpointer(tmp_path, save_every=1, async_save=True) as ckpt:
        ckpt.maybe_save(1, on1, {"mesh": 1})
        ckpt.wait()
        want8 = shardings(state, mesh8, "data")
        abstract8 = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, want8)
        got8, _ = ckpt.restore(abstract8)
        assert_bitwise_equal(got8, state)
        for x, s in zip(jax.tree.leaves(got8), jax.tree.leaves(want8)):
            assert x.sharding == s
        assert len(got8["params"]["wte"].addressable_shards) == 8
        assert got8["params"]["wte"].addressable_shards[0].data.shape == (16, 32)

        # And back: 8-way sharded -> a 2x4 mesh sharded along "model", and -> 1 device.
        ckpt.maybe_save(2, got8, {"mesh": 8})
        ckpt.wait()
        mesh24 = _mesh(8, (2, 4), ("data", "model"))
        want24 = shardings(state, mesh24, "model")
        abstract24 = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, want24)
        got24, meta = ckpt.restore(abstract24, step=2)
        assert meta == {"mesh": 8}
        assert_bitwise_equal(got24, state)
        for x, s in zip(jax.tree.leaves(got24), jax.tree.leaves(want24)):
            assert x.sharding == s
        got1, _ = ckpt.restore(abstract_like(on1), step=2)
        assert_bitwise_equal(got1, state)
        assert all(x.sharding == NamedSharding(mesh1, P()) for x in jax.tree.leaves(got1))


def test_sigterm_sets_flag_and_loop_saves(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    flag = install_sigterm_handler()
    try:
        assert not flag.is_set()
        state = make_state()
        ckpt = Checkpointer(tmp_path, save_every=100, async_save=True)
        stopped_at = None
        for step in range(1, 50):  # a toy train loop
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # the process survives: handler only flags
            if flag.reached(step):
                assert ckpt.maybe_save(step, state, {"step": step}, force=True)
                ckpt.wait()
                stopped_at = step
                break
        ckpt.close()
        assert flag.is_set()
        assert stopped_at == 3
        assert Checkpointer(tmp_path, save_every=100, read_only=True).latest_step() == 3
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGTERM) == previous


def test_async_save_then_wait(tmp_path):
    state = {"w": jnp.arange(4 * 1024 * 1024, dtype=jnp.float32).reshape(2048, 2048)}
    with Checkpointer(tmp_path, save_every=1, async_save=True) as ckpt:
        assert ckpt.maybe_save(1, state, {"step": 1})
        # Never reports an uncommitted step (Orbax's own latest_step() would).
        assert ckpt.latest_step() in (None, 1)
        ckpt.wait()
        assert ckpt.latest_step() == 1
        assert [p.name for p in tmp_path.iterdir()] == ["1"]
        assert (tmp_path / "1" / "commit_success.txt").is_file()  # the marker steps() trusts
        restored, _ = ckpt.restore(abstract_like(state))
    assert_bitwise_equal(restored, state)


def test_checkpoint_from_before_trainstate_had_frozen_still_restores(tmp_path):
    """Workdirs written before TrainState.frozen existed (a 4-field state) restore into today's state."""
    from gpt_jax.train import TrainState

    old = make_state()
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.maybe_save(1, {k: old[k] for k in ("step", "params", "opt_state", "rng")}, {"step": 1}, force=True)
    target = TrainState(step=old["step"], params=old["params"], opt_state=old["opt_state"], rng=old["rng"])
    with Checkpointer(tmp_path, save_every=0, read_only=True) as ckpt:
        state, meta = ckpt.restore(abstract_like(target), 1)
    assert meta["step"] == 1 and state.frozen == {}
    np.testing.assert_array_equal(state.params["wte"], old["params"]["wte"])
