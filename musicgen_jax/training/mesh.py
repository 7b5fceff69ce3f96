"""The device mesh from config, the logical-axis rules, and the shardings they imply.

Model code names axes logically (:mod:`musicgen_jax.sharding.axes`); here those names meet a mesh
``(data, fsdp, tensor)``. A dimension a mesh axis does not divide (the 2049-row embedding tables
under ``tensor=2``) is left replicated rather than failing, and reported once.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from musicgen_jax.sharding import axes
from musicgen_jax.training.config import DistributedSection, MeshSection

logger = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
Rules = tuple[tuple[str, Any], ...]


# ---------------------------------------------------------------------------------------- hosts


def _cluster_environment() -> bool:
    """Whether this process was started as one of several by a cluster launcher."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return True
    return len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1


def initialize_distributed(config: DistributedSection) -> bool:
    """Call ``jax.distributed.initialize`` when configured or under a cluster; before any device use.

    Fields left unset are found by jax's cluster detection (SLURM_* variables, Cloud TPU metadata,
    Open MPI); a second call in one process (a test calling :func:`train` twice) is a no-op."""
    wanted = config.initialize == "always" or (
        config.initialize == "auto" and (config.coordinator_address is not None or _cluster_environment())
    )
    if not wanted:
        return False
    if jax.distributed.is_initialized():
        return True
    if config.cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", config.cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
    )
    logger.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


# ----------------------------------------------------------------------------------------- mesh


def mesh_shape(config: MeshSection, num_devices: int) -> tuple[int, int, int]:
    """``(data, fsdp, tensor)`` with the -1 entry filled in; the product must equal ``num_devices``."""
    shape = [config.data, config.fsdp, config.tensor]
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"mesh {tuple(shape)} does not divide {num_devices} devices")
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh {tuple(shape)} needs {math.prod(shape)} devices, {num_devices} are present")
    return tuple(shape)  # type: ignore[return-value]


def create_mesh(config: MeshSection, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``Mesh`` over all devices (of all hosts), axes ``data, fsdp, tensor``."""
    from jax.experimental import mesh_utils

    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(config, len(devices))
    try:
        grid = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError):
        # Topology-aware placement is for TPUs/GPU slices; anything else gets a plain reshape.
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def rules_from_config(config: MeshSection) -> Rules:
    """The rules table: from config, else the defaults. Lists in YAML become tuples."""
    if config.rules is None:
        return axes.DEFAULT_RULES
    rules = []
    for name, target in config.rules:
        if isinstance(target, list):
            target = tuple(target)
        if target is not None and not isinstance(target, (str, tuple)):
            raise ValueError(
                f"mesh.rules: {name!r} maps to {target!r}; use a mesh axis, a list of them, or null"
            )
        for axis in (target,) if isinstance(target, str) else (target or ()):
            if axis not in MESH_AXES:
                raise ValueError(
                    f"mesh.rules: {name!r} maps to unknown mesh axis {axis!r}; mesh axes: {MESH_AXES}"
                )
        rules.append((name, target))
    return tuple(rules)


# ------------------------------------------------------------------------------------ shardings


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh, where: str) -> PartitionSpec:
    """Drop the mesh axes of any dimension they do not divide (that dimension is replicated)."""
    fitted = []
    for dim, entry in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        size = math.prod(mesh.shape[n] for n in names)
        if names and shape[dim] % size:
            logger.warning(
                "%s: dimension %d (%d) is not divisible by %s (%d): replicated",
                where,
                dim,
                shape[dim],
                names,
                size,
            )
            entry = None
        fitted.append(entry)
    return PartitionSpec(*fitted)


def logical_shardings(boxed_abstract: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree whose leaves carry logical names (``nn.Partitioned`` boxes from
    ``jax.eval_shape``); unannotated leaves are replicated."""
    logical_specs = nn.get_partition_spec(boxed_abstract)
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    shapes = nn.unbox(boxed_abstract)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]]
    flat_shapes, treedef = jax.tree_util.tree_flatten(shapes)
    flat_specs = treedef.flatten_up_to(mesh_specs)
    shardings = [
        NamedSharding(mesh, _fit(spec if _is_spec(spec) else PartitionSpec(), tuple(leaf.shape), mesh, path))
        for leaf, spec, path in zip(flat_shapes, flat_specs, paths)
    ]
    return jax.tree_util.tree_unflatten(treedef, shardings)


def logical_sharding(logical_axes: tuple[str | None, ...], mesh: Mesh, rules: Rules) -> NamedSharding:
    """The sharding of one array named by logical axes (e.g. the batch inputs)."""
    spec = nn.logical_to_mesh_axes(logical_axes, rules)
    return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_shardings(
    batch_spec: dict[str, tuple[int, ...]], mesh: Mesh, rules: Rules
) -> dict[str, NamedSharding]:
    """Every batch array is split along its leading (example) dimension by the BATCH rule."""
    return {
        name: logical_sharding((axes.BATCH,) + (None,) * (len(shape) - 1), mesh, rules)
        for name, shape in batch_spec.items()
    }


def process_batch_block(mesh: Mesh, rules: Rules, batch_size: int) -> tuple[int, int]:
    """``(index, count)``: this process's devices hold rows block ``index`` of ``count`` equal,
    contiguous blocks of the global batch, so its data source reads that block (host ``index`` of
    ``count``). ``count`` is the process count where the batch axes split the batch across
    processes; processes that share rows (a batch replicated over a ``tensor`` axis spanning hosts)
    get the same block and read the same data."""
    sharding = logical_sharding((axes.BATCH,), mesh, rules)
    rows = sorted(
        {
            (index[0].start or 0, batch_size if index[0].stop is None else index[0].stop)
            for index in sharding.addressable_devices_indices_map((batch_size,)).values()
        }
    )
    start, stop = rows[0][0], rows[-1][1]
    if any(b[0] != a[1] for a, b in itertools.pairwise(rows)) or batch_size % (stop - start):
        raise ValueError(
            f"process {jax.process_index()}'s devices hold rows {rows} of the batch of {batch_size}, "
            "not one contiguous block: order the mesh so that each host's devices are adjacent "
            "along the batch axes"
        )
    return start // (stop - start), batch_size // (stop - start)


def global_batch(
    local: dict[str, np.ndarray], shardings: dict[str, NamedSharding], batch_size: int | None = None
) -> dict[str, jax.Array]:
    """This host's block of the batch (:func:`process_batch_block`) to global arrays of
    ``batch_size`` rows (default: the local rows times the process count)."""
    arrays = {}
    for name, value in local.items():
        value = np.asarray(value)
        rows = value.shape[0] * jax.process_count() if batch_size is None else batch_size
        arrays[name] = jax.make_array_from_process_local_data(
            shardings[name], value, (rows, *value.shape[1:])
        )
    return arrays
