"""Device mesh and logical-axis rules: parameters and activations name their axes, rules map them to the mesh."""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

# Private, no public equivalent in jax 0.10: backends_are_initialized, the coordination client's barrier.
from jax._src import distributed as jax_distributed
from jax._src import xla_bridge
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)
_barrier_ids = itertools.count()

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Flax takes the first rule whose mesh axes are still free, so an
# activation [batch, length, embed] gets batch over (data, fsdp) and embed replicated, while an
# [embed, mlp] kernel gets embed over fsdp (ZeRO-3 style) and mlp over tensor (Megatron style).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
)


def mesh_shape(axes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Sizes for (data, fsdp, tensor); one axis may be -1 = all remaining devices."""
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"unknown mesh axis {unknown}; config.mesh takes {MESH_AXES}")
    sizes = [int(axes.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh={dict(axes)} has more than one -1; at most one axis may take the rest")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"config.mesh={dict(axes)} does not divide {num_devices} devices; "
                f"make the fixed axes' product divide {num_devices}"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh={dict(axes)} needs {math.prod(sizes)} devices but {num_devices} are "
            f"available; make data*fsdp*tensor = {num_devices} or set one axis to -1"
        )
    return tuple(sizes)


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(axes, len(devices))
    try:  # topology-aware device order on TPU/GPU slices
        grid = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # noqa: BLE001 - CPU and odd shapes: plain order is fine
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)  # Auto axis types: with_sharding_constraint works


def _fit(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drop mesh axes from dims they don't divide (e.g. a 65-token char vocab over tensor=2)."""
    parts = []
    for dim, part in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (part,) if isinstance(part, str) else tuple(part or ())
        size = math.prod(mesh.shape[n] for n in names)
        parts.append(part if size and dim % size == 0 else None)
    return P(*parts)


def logical_sharding(boxed_tree, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedShardings for a tree whose leaves are (abstract) nn.LogicallyPartitioned boxes."""
    specs = nn.get_partition_spec(boxed_tree)
    shapes = nn.meta.unbox(boxed_tree)

    def to_sharding(spec, leaf):
        mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules) if spec else P()
        return NamedSharding(mesh, _fit(mesh_spec, leaf.shape, mesh))

    return jax.tree.map(to_sharding, specs, shapes, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int, leading: int = 0) -> NamedSharding:
    """Batch dimension (after `leading` unsharded axes, e.g. a steps axis) over (data, fsdp)."""
    return NamedSharding(mesh, P(*([None] * leading), ("data", "fsdp"), *([None] * (ndim - leading - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_replicated(tree, mesh: Mesh):
    """`jax.device_put(tree, replicated(mesh))`, also when the mesh spans several processes, where
    device_put refuses a PRNG key (and any committed one-device array): those go through the host
    (every process holds the same value)."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _put_global(x, sharding), tree)


def _put_global(x, sharding: NamedSharding):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already spans the processes
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_put_global(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
    host = np.asarray(x)  # every process's own copy: no cross-process check (device_put would compile one)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


# Everything distributed_launch reads.
LAUNCH_ENV = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "GPT_JAX_NO_DISTRIBUTED",
)


def distributed_launch() -> dict[str, int] | None:
    """The launch this process belongs to, from the environment: None for a single process, else the
    `jax.distributed.initialize` arguments it gives ({} where JAX's cluster auto-detection fills them).

    Several processes are: JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and JAX_PROCESS_ID unless
    Slurm/MPI/TPU provide them), a Slurm or Open MPI job of more than one task, or a multi-host TPU slice
    (TPU_WORKER_HOSTNAMES lists several hosts). GPT_JAX_NO_DISTRIBUTED=1 opts out. Reads no JAX state.
    """
    if os.environ.get("GPT_JAX_NO_DISTRIBUTED") == "1":
        return None
    cluster = (
        (_env_int("SLURM_NTASKS") or 1) > 1
        or (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1
        or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    )
    if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return {} if cluster else None
    num, index = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
    if (num is None or index is None) and not cluster:
        raise ValueError(
            "JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES and JAX_PROCESS_ID are not; set both "
            "(e.g. JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 on the first host), or unset JAX_COORDINATOR_ADDRESS"
        )
    if num is not None and index is not None and not 0 <= index < num:
        raise ValueError(f"JAX_PROCESS_ID={index} is not in [0, JAX_NUM_PROCESSES={num})")
    return {k: v for k, v in (("num_processes", num), ("process_id", index)) if v is not None}


def maybe_initialize_distributed() -> None:
    """Multi-host (TPU pods, multi-node GPU, several CPU processes): join the cluster when launched as
    several processes (see `distributed_launch`). Must run before anything starts JAX's backend
    (jax.devices, jax.process_count, any computation): it reads only the environment until it joins."""
    if jax.distributed.is_initialized():  # the caller (or an earlier Trainer) joined already
        return
    launch = distributed_launch()
    if launch is None:
        return
    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            "this is a multi-process launch (JAX_COORDINATOR_ADDRESS, Slurm, MPI or TPU environment) but "
            "JAX's backend already started in this process; call gpt_jax.sharding.maybe_initialize_distributed() "
            "before any JAX computation or device query, or set GPT_JAX_NO_DISTRIBUTED=1 to run single-process"
        )
    if jax.config.jax_cpu_collectives_implementation is None:  # cross-process collectives on CPU
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**launch)
    log.info(
        "joined %d processes as process %d (%d of %d devices local)",
        jax.process_count(),
        jax.process_index(),
        jax.local_device_count(),
        jax.device_count(),
    )


def sync_processes(name: str) -> None:
    """A barrier across processes (a no-op in a single process), e.g. between the others reading a file
    and process 0 rewriting it. Uses the coordination service: no device computation, nothing to compile."""
    if not jax.distributed.is_initialized() or jax.process_count() == 1:
        return
    key = f"gpt_jax:{name}:{next(_barrier_ids)}"  # each barrier id once: every process counts the same calls
    jax_distributed.global_state.client.wait_at_barrier(key, timeout_in_ms=10 * 60 * 1000)
