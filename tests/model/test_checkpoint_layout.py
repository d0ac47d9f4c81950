"""How checkpoint items are written: replicated arrays are split across their replicas' writes
only when each slice is large enough to be worth its own device program."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from octo_like.model.checkpoint_layout import MIN_REPLICA_SLICE_BYTES, handler_registry


def _replicated(shape) -> jax.Array:
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return jax.device_put(values, NamedSharding(mesh, PartitionSpec()))


def _chunks(step_dir: pathlib.Path, name: str) -> int:
    """Chunk files of one array in a per-array (zarr) item: one per slice written."""
    return sum(1 for p in (step_dir / "params" / name).iterdir() if not p.name.startswith("."))


def _save(directory: pathlib.Path, tree, registry) -> pathlib.Path:
    with ocp.CheckpointManager(directory, handler_registry=registry) as manager:
        manager.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(tree)))
        manager.wait_until_finished()
    return directory / "0"


def test_small_replicated_arrays_are_written_whole_and_large_ones_in_slices(tmp_path):
    assert len(jax.devices()) >= 8
    small = _replicated((8, 64))  # 256 bytes per replica's slice
    large = _replicated((8, MIN_REPLICA_SLICE_BYTES // 4))  # a slice of exactly the minimum
    tree = {"small": small, "large": large}

    step = _save(tmp_path / "ours", tree, handler_registry(("params",)))
    assert _chunks(step, "small") == 1  # one replica writes it: no slice program per device
    assert _chunks(step, "large") == 8  # every replica writes its eighth
    with ocp.CheckpointManager(
        tmp_path / "ours", handler_registry=handler_registry(("params",))
    ) as m:
        restored = m.restore(0, args=ocp.args.Composite(params=ocp.args.StandardRestore(tree)))
    for name, array in tree.items():
        np.testing.assert_array_equal(np.asarray(restored["params"][name]), np.asarray(array))

    # Orbax's own handler splits even the small one: the threshold is what changed.
    default = ocp.handlers.DefaultCheckpointHandlerRegistry()
    handler = ocp.StandardCheckpointHandler(use_ocdbt=False)
    default.add("params", ocp.args.StandardSave, handler)
    step = _save(tmp_path / "orbax", {"small": small}, default)
    assert _chunks(step, "small") == 8
