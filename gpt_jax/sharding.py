"""Device mesh and logical-axis rules: parameters and activations name their axes, rules map them to the mesh."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

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


def maybe_initialize_distributed() -> None:
    """Multi-host (TPU pods, multi-node GPU): join the cluster when launched as several processes."""
    import os

    if jax.process_count() > 1:
        return
    if (
        any(
            k in os.environ
            for k in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
        )
        and os.environ.get("GPT_JAX_NO_DISTRIBUTED") != "1"
    ):
        jax.distributed.initialize()
