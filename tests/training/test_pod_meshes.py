"""Meshes for pods, built over the compile-only devices of real TPU topologies (libtpu's
`jax.experimental.topologies`: real chip coordinates, hosts of 2x2x1 chips, slices): the code
path `make_mesh` takes on a pod, without the pod."""

from __future__ import annotations

import numpy as np
import pytest

from configs import pretrain
from octo_like.training.parallel.distributed import batch_shards
from octo_like.training.parallel.sharding import (
    MeshConfig,
    batch_sharding,
    describe_mesh,
    device_array,
    make_mesh,
)
from octo_like.training.pods.compile_check import topology_devices

V4_128 = topology_devices("v4:4x4x4")  # 64 chips (megacore: one device per chip), 16 hosts
V5E_256 = topology_devices("v5e:16x16")  # 256 chips, 64 hosts
TWO_V4_64 = topology_devices("v4:4x4x2", num_slices=2)  # 2 x 32 chips over DCN


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


@pytest.mark.parametrize(
    "topology", [V4_128, V5E_256, TWO_V4_64], ids=["v4-128", "v5e-256", "2xv4-64"]
)
def test_a_pod_host_holds_a_2x2_block_of_chips(topology):
    """What the fakes used to get wrong: a host's 4 chips are a 2x2x1 block, not a row."""
    hosts = {}
    for device in topology:
        key = (getattr(device, "slice_index", 0), device.process_index)
        hosts.setdefault(key, []).append(tuple(device.coords))
    assert len(hosts) == len(topology) // 4
    for coords in hosts.values():
        spans = np.ptp(np.array(coords), axis=0) + 1
        assert sorted(spans.tolist()) == [1, 2, 2], coords


@pytest.mark.parametrize(
    "topology, overrides",
    [
        (V4_128, {}),
        (V4_128, {"fsdp": 8}),
        (V5E_256, {"fsdp": 16}),
        (TWO_V4_64, {}),
        (TWO_V4_64, {"dcn_data": 2, "fsdp": 8}),
    ],
    ids=["v4-128", "v4-128-fsdp8", "v5e-256-fsdp16", "2xv4-64", "2xv4-64-fsdp8"],
)
def test_each_host_owns_its_own_equal_share_of_the_batch(topology, overrides):
    """Per-process loading (`distributed.global_batch`) needs every host's devices to hold
    global_batch / hosts distinct rows, no row held by two hosts."""
    mesh = make_mesh(MeshConfig(**overrides), topology)
    sharding = batch_sharding(mesh)
    global_batch = 2048
    assert global_batch % batch_shards(sharding) == 0
    rows_of = {}
    for device, index in sharding.devices_indices_map((global_batch,)).items():
        key = (getattr(device, "slice_index", 0), device.process_index)
        rows_of.setdefault(key, set()).update(range(*index[0].indices(global_batch)))
    hosts = len(topology) // 4
    assert len(rows_of) == hosts
    assert all(len(rows) == global_batch // hosts for rows in rows_of.values())
    assert set.union(*rows_of.values()) == set(range(global_batch))
