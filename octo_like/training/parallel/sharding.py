"""Device mesh and sharding rules: where the batch, parameters and optimizer state live.

The mesh has two axes, ``(data, fsdp)``. Parameters are replicated over ``data`` and, when large
enough, split over ``fsdp`` (fully sharded data parallel: each layer's shards are all-gathered by
the compiler just before use). Data parallelism is the default: Octo-size models (<= 100M
parameters) fit on every chip, and replicas only all-reduce gradients.

The device order follows the hardware (`jax.experimental.mesh_utils`): on a TPU slice the
logical axes are laid along the physical torus (splitting physical axes where a logical axis
needs it, e.g. ``fsdp=8`` on a 4x4x4 v4 slice); across slices (multi-slice, DCN) the mesh is
built by `create_hybrid_device_mesh` with ``dcn_data`` x ``dcn_fsdp`` slices, so only the axes
named there cross the slower data-center network. Shardings are declared once, at the
``jax.jit`` boundary, through ``in_shardings`` / ``out_shardings``; the compiler propagates them
inside the step.

Parameter paths are ``/``-joined keys, e.g. ``"transformer/blocks/0/mlp/kernel"`` (the ``value``
attribute of ``nnx.Variable`` leaves is left out), and are what `MeshConfig.rules` match.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# The batch is split over BOTH axes: every device holds a distinct slice of the batch, so
# activation memory per device shrinks with the total device count. Devices along ``fsdp``
# additionally hold distinct shards of the large parameters (and their optimizer moments);
# devices along ``data`` hold replicas of them.
DATA_AXIS = "data"
FSDP_AXIS = "fsdp"

REPLICATE = "replicate"
FSDP = "fsdp"
_ACTIONS = (REPLICATE, FSDP)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape and parameter sharding strategy.

    `data` / `fsdp`: devices along each axis within a slice; -1 (for one of them) = all
    remaining devices of the slice. (One GPU host or one CPU process counts as one slice.)
    `dcn_data` / `dcn_fsdp`: slices along each axis (multi-slice TPU; XLA may also count each
    GPU host as a slice); their product must equal the number of slices; ``dcn_data=-1`` (the
    default) puts all remaining slices on the data axis. The mesh's axis sizes are
    ``data * dcn_data`` and ``fsdp * dcn_fsdp``.
    `fsdp_min_size_mb`: arrays smaller than this (MiB) are replicated; splitting them saves
    little memory and costs an all-gather each.
    `rules`: ``(regex, "replicate" | "fsdp")`` overrides of that heuristic, matched with
    ``re.search`` against parameter paths; the first match wins and a rule matching no
    parameter is an error (it is almost always a typo).
    """

    data: int = -1
    fsdp: int = 1
    dcn_data: int = -1
    dcn_fsdp: int = 1
    fsdp_min_size_mb: float = 4.0
    rules: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for name in ("data", "fsdp"):
            size = getattr(self, name)
            if size != -1 and size < 1:
                raise ValueError(
                    f"MeshConfig.{name} must be -1 (all remaining) or >= 1, not {size}"
                )
        if self.dcn_fsdp < 1 or (self.dcn_data < 1 and self.dcn_data != -1):
            raise ValueError(
                f"MeshConfig.dcn_data must be -1 (all remaining slices) or >= 1 and dcn_fsdp "
                f">= 1, not {self.dcn_data} / {self.dcn_fsdp}"
            )
        if self.data == -1 and self.fsdp == -1:
            raise ValueError("MeshConfig: only one of data / fsdp may be -1 (all remaining)")
        if self.fsdp_min_size_mb < 0:
            raise ValueError(
                f"MeshConfig.fsdp_min_size_mb must be >= 0, not {self.fsdp_min_size_mb}"
            )
        rules = []
        for rule in self.rules:
            if len(rule) != 2:
                raise ValueError(f"MeshConfig rule {rule!r} must be a (regex, action) pair")
            pattern, action = rule
            if action not in _ACTIONS:
                raise ValueError(
                    f"MeshConfig rule {pattern!r}: action {action!r} is not one of {_ACTIONS}"
                )
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"MeshConfig rule {pattern!r} is not a valid regex: {e}") from e
            rules.append((pattern, action))
        # Configs may hand over lists; keep the frozen config hashable.
        object.__setattr__(self, "rules", tuple(rules))


def make_mesh(config: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh over `devices` (default: all devices of all processes).

    Axes are `AxisType.Auto`: the compiler propagates the shardings declared at the jit
    boundary. (`jax.make_mesh` defaults to Explicit axes, which would make every op inside the
    model name its output sharding.)
    """
    return Mesh(
        device_array(config, devices), (DATA_AXIS, FSDP_AXIS), axis_types=(AxisType.Auto,) * 2
    )


def _slice_count(devices: Sequence[Any]) -> int:
    return len({getattr(d, "slice_index", 0) for d in devices})


def device_array(config: MeshConfig, devices: Sequence[Any] | None = None) -> np.ndarray:
    """The mesh's devices, shape ``(data * dcn_data, fsdp * dcn_fsdp)``, in topology order."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh: no devices given")
    slices = _slice_count(devices)
    if config.dcn_data == -1 and slices % config.dcn_fsdp:
        raise ValueError(
            f"make_mesh: dcn_fsdp={config.dcn_fsdp} does not divide the {slices} slice(s)"
        )
    dcn_data = slices // config.dcn_fsdp if config.dcn_data == -1 else config.dcn_data
    dcn = (dcn_data, config.dcn_fsdp)
    if dcn[0] * dcn[1] != slices:
        raise ValueError(
            f"make_mesh: the devices form {slices} slice(s), but dcn_data={dcn[0]} x "
            f"dcn_fsdp={dcn[1]} = {dcn[0] * dcn[1]}; set them so their product is {slices}"
        )
    count = len(devices) // slices
    data, fsdp = config.data, config.fsdp
    if data == -1 or fsdp == -1:
        fixed = fsdp if data == -1 else data
        if count % fixed:
            raise ValueError(
                f"make_mesh: {'fsdp' if data == -1 else 'data'}={fixed} does not divide the "
                f"{count} devices per slice"
            )
        data, fsdp = (count // fixed, fsdp) if data == -1 else (data, count // fixed)
    if data * fsdp != count:
        raise ValueError(
            f"make_mesh: data={data} x fsdp={fsdp} = {data * fsdp} devices, but a slice has "
            f"{count}; set one of them to -1 to use all remaining devices"
        )
    if slices > 1:
        return mesh_utils.create_hybrid_device_mesh(
            (data, fsdp), dcn, devices, allow_split_physical_axes=True
        )
    return mesh_utils.create_device_mesh((data, fsdp), devices, allow_split_physical_axes=True)


def describe_mesh(mesh: Mesh) -> str:
    """One line for the start-up log: axis sizes, device kind and count, slices."""
    devices = mesh.devices.reshape(-1)
    kind = getattr(devices[0], "device_kind", "?")
    sizes = ", ".join(f"{name}={size}" for name, size in mesh.shape.items())
    return f"mesh ({sizes}) over {devices.size} x {kind} in {_slice_count(devices)} slice(s)"


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh; other axes whole."""
    return NamedSharding(mesh, PartitionSpec((DATA_AXIS, FSDP_AXIS)))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (scalars, metrics, small arrays)."""
    return NamedSharding(mesh, PartitionSpec())


def path_string(key_path: Sequence[Any]) -> str:
    """``"a/b/0/kernel"`` for a `jax.tree_util` key path; drops ``nnx.Variable``'s ``.value``."""
    return "/".join(_path_parts(key_path))


def _path_parts(key_path: Sequence[Any]) -> tuple[str, ...]:
    # An nnx.Variable is a pytree node whose child is reached by `.value`; the parameter's name
    # is the path to the Variable (the same convention as `masks.py`).
    last = key_path[-1] if key_path else None
    if isinstance(last, jax.tree_util.GetAttrKey) and last.name == "value":
        key_path = key_path[:-1]
    parts = []
    for key in key_path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return tuple(parts)


def _shape_and_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    array = np.asarray(leaf)
    return array.shape, array.dtype


def _fsdp_spec(shape: tuple[int, ...], fsdp_size: int) -> PartitionSpec | None:
    """Split the largest axis divisible by `fsdp_size` (earliest on ties); None if none is."""
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] > 0 and shape[axis] % fsdp_size == 0:
            return PartitionSpec(*(FSDP_AXIS if a == axis else None for a in range(len(shape))))
    return None


def parameter_shardings(params: Any, mesh: Mesh, config: MeshConfig) -> Any:
    """A tree like `params` (arrays or `jax.ShapeDtypeStruct`s) with a `NamedSharding` per leaf.

    Default: arrays of at least `config.fsdp_min_size_mb` are split over ``fsdp`` along their
    largest divisible axis; the rest, and arrays with no divisible axis, are replicated.
    `config.rules` override this per path; a ``"fsdp"`` rule on an array with no axis divisible
    by the fsdp size is an error.
    """
    fsdp_size = mesh.shape[FSDP_AXIS]
    threshold_bytes = config.fsdp_min_size_mb * 2**20
    compiled = [(re.compile(pattern), pattern, action) for pattern, action in config.rules]
    used = set()

    def choose(key_path, leaf) -> NamedSharding:
        path = path_string(key_path)
        shape, dtype = _shape_and_dtype(leaf)
        action = None
        for regex, pattern, rule_action in compiled:
            if regex.search(path):
                used.add(pattern)
                action = rule_action
                break
        from_rule = action is not None
        if action is None:
            big = math.prod(shape) * dtype.itemsize >= threshold_bytes
            action = FSDP if big and len(shape) > 0 else REPLICATE
        if action == REPLICATE or fsdp_size == 1:
            return replicated(mesh)
        spec = _fsdp_spec(shape, fsdp_size)
        if spec is None:
            if from_rule:
                raise ValueError(
                    f"parameter {path!r} of shape {shape} has no axis divisible by the fsdp "
                    f"size {fsdp_size}, but a sharding rule asks to shard it over fsdp"
                )
            return replicated(mesh)
        return NamedSharding(mesh, spec)

    shardings = jax.tree_util.tree_map_with_path(choose, params)
    unused = [pattern for pattern, _ in config.rules if pattern not in used]
    if unused:
        raise ValueError(
            f"sharding rules {unused} match no parameter path (paths look like "
            f"{_example_paths(params)})"
        )
    return shardings


def _example_paths(tree: Any, count: int = 3) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [path_string(p) for p, _ in leaves[:count]]


def _fits(sharding: NamedSharding, shape: tuple[int, ...]) -> bool:
    """Whether `sharding`'s spec can lay out an array of `shape` (rank and divisibility)."""
    spec = sharding.spec
    if len(spec) > len(shape):
        return False
    for dim, axes in zip(shape, spec, strict=False):
        if axes is None:
            continue
        names = axes if isinstance(axes, tuple) else (axes,)
        if dim % math.prod(sharding.mesh.shape[n] for n in names):
            return False
    return True


def opt_state_shardings(opt_state: Any, param_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for an optimizer state (arrays or abstract), following the parameters.

    A state leaf whose path ends with a parameter's path (optax moments: ``0/mu/<param path>``)
    gets that parameter's sharding when it fits the leaf's shape; everything else (step counts,
    factored statistics of another shape) is replicated.
    """
    by_path: dict[tuple[str, ...], NamedSharding] = {}
    for key_path, sharding in jax.tree_util.tree_flatten_with_path(param_shardings)[0]:
        if not isinstance(sharding, NamedSharding):
            raise TypeError(
                f"param_shardings leaf {path_string(key_path)!r} is a {type(sharding).__name__}, "
                "not a NamedSharding (pass the output of parameter_shardings)"
            )
        by_path[_path_parts(key_path)] = sharding

    def choose(key_path, leaf) -> NamedSharding:
        parts = _path_parts(key_path)
        shape, _ = _shape_and_dtype(leaf)
        for start in range(len(parts) + 1):  # longest suffix first
            sharding = by_path.get(parts[start:])
            if sharding is not None:
                return sharding if _fits(sharding, shape) else replicated(mesh)
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(choose, opt_state)


def describe_shardings(tree: Any) -> str:
    """A table of path / shape / dtype / partition spec / per-device shape, for logs.

    Leaves are arrays or `jax.ShapeDtypeStruct`s carrying a sharding, or bare shardings (then
    shape and dtype are unknown).
    """
    rows = [("path", "shape", "dtype", "spec", "per device")]
    total_bytes = device_bytes = 0
    sized = False
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )[0]
    for key_path, leaf in leaves:
        path = path_string(key_path) or "<root>"
        if isinstance(leaf, jax.sharding.Sharding):
            rows.append((path, "?", "?", _spec_string(leaf), "?"))
            continue
        sharding = getattr(leaf, "sharding", None)
        shape, dtype = _shape_and_dtype(leaf)
        if sharding is None:
            rows.append((path, str(shape), dtype.name, "<no sharding>", "?"))
            continue
        shard_shape = sharding.shard_shape(shape)
        sized = True
        total_bytes += math.prod(shape) * dtype.itemsize
        device_bytes += math.prod(shard_shape) * dtype.itemsize
        rows.append((path, str(shape), dtype.name, _spec_string(sharding), str(shard_shape)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if sized:
        lines.append(
            f"{len(rows) - 1} arrays, {total_bytes / 2**20:.2f} MiB in total, "
            f"{device_bytes / 2**20:.2f} MiB per device"
        )
    else:
        lines.append(f"{len(rows) - 1} arrays (shapes unknown)")
    return "\n".join(line.rstrip() for line in lines)


def _spec_string(sharding: jax.sharding.Sharding) -> str:
    if isinstance(sharding, NamedSharding):
        return str(tuple(sharding.spec)) if len(sharding.spec) else "replicated"
    return type(sharding).__name__
