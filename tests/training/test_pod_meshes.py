"""Meshes for pods, built over fake TPU device objects carrying real topologies (coordinates,
cores, slices): the code path `make_mesh` takes on a pod, without the pod."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from configs import pretrain
from octo_like.training.sharding import MeshConfig, describe_mesh, device_array, make_mesh


@dataclasses.dataclass(frozen=True)
class FakeTpu:
    """The attributes `jax.experimental.mesh_utils` reads from a TPU device."""

    id: int
    coords: tuple[int, int, int]
    device_kind: str
    slice_index: int = 0
    process_index: int = 0
    core_on_chip: int = 0
    platform: str = "tpu"


def tpu_slice(kind: str, shape: tuple[int, int, int], *, slice_index=0, first_id=0, chips=4):
    """One slice's chips in id order (x fastest), `chips` per host."""
    devices = []
    for i, (z, y, x) in enumerate(itertools.product(*(range(n) for n in reversed(shape)))):
        devices.append(
            FakeTpu(
                id=first_id + i,
                coords=(x, y, z),
                device_kind=kind,
                slice_index=slice_index,
                process_index=(first_id + i) // chips,
            )
        )
    return devices


V4_128 = tpu_slice("TPU v4", (4, 4, 4))  # 64 chips (megacore: one device per chip)
V5E_256 = tpu_slice("TPU v5 lite", (16, 16, 1))
TWO_V4_64 = tpu_slice("TPU v4", (4, 4, 2)) + tpu_slice(
    "TPU v4", (4, 4, 2), slice_index=1, first_id=32
)


def _mesh_config(preset: str, **overrides) -> MeshConfig:
    raw = pretrain.get_config(preset).mesh.to_dict()
    return MeshConfig(**{**raw, **overrides})


@pytest.mark.parametrize("preset", ["tiny,bridge", "small,oxe_magic_soup", "base,bridge"])
@pytest.mark.parametrize(
    "topology, overrides, shape",
    [
        (V4_128, {}, (64, 1)),  # data parallel, the default
        (V4_128, {"fsdp": 8}, (8, 8)),  # the README's fsdp=8: splits the 4x4x4 torus
        (V5E_256, {}, (256, 1)),
        (V5E_256, {"fsdp": 16}, (16, 16)),
        (TWO_V4_64, {}, (64, 1)),  # two slices: data parallel over DCN (dcn_data=-1)
        (TWO_V4_64, {"dcn_data": 2, "fsdp": 8}, (8, 8)),
    ],
    ids=["v4-128", "v4-128-fsdp8", "v5e-256", "v5e-256-fsdp16", "2xv4-64", "2xv4-64-fsdp8"],
)
def test_every_preset_builds_a_mesh_on_pod_topologies(preset, topology, overrides, shape):
    config = _mesh_config(preset, **overrides)
    devices = device_array(config, topology)
    assert devices.shape == shape
    assert sorted(d.id for d in devices.reshape(-1)) == sorted(d.id for d in topology)
    if topology is TWO_V4_64:
        # Only the data axis crosses slices: each half of it stays within one slice.
        half = shape[0] // 2
        assert {d.slice_index for d in devices[:half].reshape(-1)} == {0}
        assert {d.slice_index for d in devices[half:].reshape(-1)} == {1}
    if shape[1] > 1:
        # An fsdp group (one row) is a compact block of the torus, not a scattered set.
        for row in devices:
            coords = np.array([d.coords for d in row])
            spans = coords.max(0) - coords.min(0) + 1
            assert np.prod(spans) == shape[1], (row, spans)


def test_mesh_axes_follow_the_torus_where_plain_reshapes_would_not():
    """On 4x4x4, fsdp=4 groups lie along one physical axis (neighbours on the ring)."""
    devices = device_array(MeshConfig(data=-1, fsdp=4), V4_128)
    for row in devices:
        coords = np.array([d.coords for d in row])
        assert sum(len(set(coords[:, axis])) > 1 for axis in range(3)) == 1


def test_wrong_slice_counts_and_sizes_are_named():
    with pytest.raises(ValueError, match=r"2 slice\(s\), but dcn_data=1 x dcn_fsdp=1"):
        device_array(MeshConfig(dcn_data=1), TWO_V4_64)
    with pytest.raises(ValueError, match=r"dcn_fsdp=3 does not divide the 2 slice\(s\)"):
        device_array(MeshConfig(dcn_fsdp=3), TWO_V4_64)
    with pytest.raises(ValueError, match="fsdp=5 does not divide the 64 devices per slice"):
        device_array(MeshConfig(fsdp=5), V4_128)
    with pytest.raises(ValueError, match="dcn_data must be -1"):
        MeshConfig(dcn_data=0)


def test_cpu_fake_devices_still_build_the_real_mesh():
    import jax

    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    assert describe_mesh(mesh) == "mesh (data=2, fsdp=4) over 8 x cpu in 1 slice(s)"
    assert len(jax.devices()) == 8
