"""Distributed setup: argument resolution, global batches on 8 fake devices, and a real
two-process run whose losses must equal a single-process run on the whole batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from octo_like.data.rlds import ProcessShard
from octo_like.training.parallel import distributed, sharding
from tests.conftest import REPO
from tests.training import multiprocess_child
from tests.xla_flags import xla_flags

ENV = {
    "OCTO_COORDINATOR_ADDRESS": "10.0.0.1:1234",
    "OCTO_NUM_PROCESSES": "4",
    "OCTO_PROCESS_ID": "2",
}


def test_single_process_by_default():
    assert distributed.initialize_arguments(distributed.DistributedConfig(), {}) is None
    # Explicitly disabled wins over the environment.
    config = distributed.DistributedConfig(enabled=False)
    assert distributed.initialize_arguments(config, ENV) is None
    assert distributed.initialize_arguments(config, {"OCTO_DISTRIBUTED": "1"}) is None
    assert distributed.initialize_arguments(config, {"OCTO_PROCESS_ID": "bad"}) is None
    distributed.initialize(distributed.DistributedConfig(), {})  # no-op, must not touch jax
    assert not jax.distributed.is_initialized()


def test_arguments_from_environment_and_config_overrides():
    args = distributed.initialize_arguments(distributed.DistributedConfig(), ENV)
    assert args == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 2,
        "local_device_ids": None,
    }
    config = distributed.DistributedConfig(process_id=3, local_device_ids=[0, 1])
    args = distributed.initialize_arguments(config, {**ENV, "OCTO_LOCAL_DEVICE_IDS": "5,6"})
    assert args["process_id"] == 3 and args["local_device_ids"] == (0, 1)
    args = distributed.initialize_arguments(
        distributed.DistributedConfig(), {**ENV, "OCTO_LOCAL_DEVICE_IDS": "5,6"}
    )
    assert args["local_device_ids"] == (5, 6)
    # OCTO_DISTRIBUTED=0 turns off an environment that would otherwise enable it.
    assert (
        distributed.initialize_arguments(
            distributed.DistributedConfig(), {**ENV, "OCTO_DISTRIBUTED": "0"}
        )
        is None
    )


def test_cluster_auto_detection_passes_nothing():
    expected = dict.fromkeys(
        ("coordinator_address", "num_processes", "process_id", "local_device_ids")
    )
    enabled = distributed.DistributedConfig(enabled=True)
    assert distributed.initialize_arguments(enabled, {}) == expected
    assert (
        distributed.initialize_arguments(
            distributed.DistributedConfig(), {"OCTO_DISTRIBUTED": "yes"}
        )
        == expected
    )


SLURM_TWO_TASKS = {
    "SLURM_JOB_ID": "77",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_STEP_NODELIST": "node[1-2]",
}


@pytest.mark.parametrize(
    ("environ", "files", "modules", "cluster"),
    [
        ({}, (), (), None),
        (SLURM_TWO_TASKS, (), (), "slurm"),
        ({**SLURM_TWO_TASKS, "SLURM_NTASKS": "1"}, (), (), None),  # one task: one process
        (
            {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://h:1", "OMPI_COMM_WORLD_SIZE": "4"},
            (),
            (),
            "openmpi",
        ),
        ({"TPU_WORKER_HOSTNAMES": "w-0,w-1,w-2,w-3"}, (), (), "tpu-gke"),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, (), (), None),
        ({"MEGASCALE_COORDINATOR_ADDRESS": "slice-0:8080"}, (), (), "tpu-multislice"),
        (
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "3"},
            (),
            (),
            "kubernetes",
        ),
        ({}, ("/dev/accel0",), ("libtpu",), "tpu-vm"),
        ({}, ("/dev/accel0",), (), None),  # accelerator files without libtpu: not a TPU VM
    ],
)
def test_clusters_are_detected_from_their_launchers_variables(environ, files, modules, cluster):
    found = distributed.detect_cluster(
        environ, path_exists=lambda p: p in files, module_available=lambda m: m in modules
    )
    assert found == cluster


def test_a_detected_cluster_enables_jax_detection_unless_turned_off():
    expected = dict.fromkeys(
        ("coordinator_address", "num_processes", "process_id", "local_device_ids")
    )
    auto = distributed.DistributedConfig()
    assert distributed.initialize_arguments(auto, SLURM_TWO_TASKS) == expected
    off = {**SLURM_TWO_TASKS, "OCTO_DISTRIBUTED": "0"}
    assert distributed.initialize_arguments(auto, off) is None
    assert (
        distributed.initialize_arguments(
            distributed.DistributedConfig(enabled=False), SLURM_TWO_TASKS
        )
        is None
    )
    # Explicit values still override what the cluster would give.
    assert distributed.initialize_arguments(auto, {**SLURM_TWO_TASKS, **ENV})["process_id"] == 2


@pytest.mark.parametrize(
    ("config", "environ", "message"),
    [
        (
            distributed.DistributedConfig(),
            {"OCTO_COORDINATOR_ADDRESS": "h:1"},
            "missing num_processes",
        ),
        (distributed.DistributedConfig(), {**ENV, "OCTO_PROCESS_ID": "x"}, "OCTO_PROCESS_ID='x'"),
        (
            distributed.DistributedConfig(),
            {**ENV, "OCTO_PROCESS_ID": "4"},
            "process_id 4 is not in",
        ),
        (distributed.DistributedConfig(), {"OCTO_DISTRIBUTED": "maybe"}, "OCTO_DISTRIBUTED"),
        (
            distributed.DistributedConfig(),
            {**ENV, "OCTO_LOCAL_DEVICE_IDS": "0;1"},
            "comma-separated",
        ),
        (distributed.DistributedConfig(enabled=True, num_processes=2), {}, "coordinator_address"),
    ],
)
def test_bad_settings_name_the_problem(config, environ, message):
    with pytest.raises(ValueError, match=message):
        distributed.initialize_arguments(config, environ)


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        distributed.DistributedConfig(num_processes=0)
    with pytest.raises(ValueError, match="contradicts"):
        distributed.DistributedConfig(enabled=False, coordinator_address="h:1")


def test_process_helpers_single_process():
    assert distributed.process_shard() == ProcessShard(0, 1)
    assert distributed.is_main_process()


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4))


def _local_batch(size: int) -> dict:
    return {
        "observation": {
            "image_primary": np.arange(size * 2 * 3, dtype=np.uint8).reshape(size, 2, 3),
            "timestep_pad_mask": np.ones((size, 2), bool),
        },
        "action": np.arange(size * 4, dtype=np.float32).reshape(size, 4),
        "dataset_name": np.array([b"bridge"] * size, dtype=object),
    }


def test_global_batch_splits_over_all_devices(mesh):
    local = _local_batch(16)
    batch = distributed.global_batch(local, sharding.batch_sharding(mesh), 16, drop_strings=True)
    assert set(batch) == {"observation", "action"}
    assert set(batch["observation"]) == {"image_primary", "timestep_pad_mask"}
    image = batch["observation"]["image_primary"]
    assert image.shape == (16, 2, 3) and image.dtype == np.uint8
    assert len(image.addressable_shards) == 8
    assert {s.data.shape for s in image.addressable_shards} == {(2, 2, 3)}
    assert len({s.device for s in image.addressable_shards}) == 8
    np.testing.assert_array_equal(np.asarray(batch["action"]), local["action"])
    for shard in batch["action"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), local["action"][shard.index])


def test_global_batch_rejects_bad_input(mesh):
    batch_sharding = sharding.batch_sharding(mesh)
    with pytest.raises(ValueError, match="'dataset_name' has dtype object"):
        distributed.global_batch(_local_batch(16), batch_sharding, 16)
    with pytest.raises(
        ValueError, match="local batch size 16 x 1 processes != global batch size 32"
    ):
        distributed.global_batch(_local_batch(16), batch_sharding, 32, drop_strings=True)
    with pytest.raises(ValueError, match="not divisible by the 8 batch shards"):
        distributed.global_batch(_local_batch(12), batch_sharding, 12, drop_strings=True)
    ragged = {"a": np.zeros((8, 2)), "b": np.zeros((16, 2))}
    with pytest.raises(ValueError, match="'b' has 16 rows but 'a' has 8"):
        distributed.global_batch(ragged, batch_sharding, 8)
    with pytest.raises(ValueError, match="'s' is a scalar"):
        distributed.global_batch({"s": np.float32(1.0)}, batch_sharding, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
    port = _free_port()
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=xla_flags(devices=1),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
        OCTO_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        OCTO_NUM_PROCESSES="2",
    )
    children = []
    try:
        for process_id in range(2):
            log = open(tmp_path / f"child{process_id}.log", "w")  # noqa: SIM115
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.training.multiprocess_child",
                        str(tmp_path / f"out{process_id}.json"),
                    ],
                    cwd=REPO,
                    env={**env, "OCTO_PROCESS_ID": str(process_id)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        deadline = time.monotonic() + 300
        for child in children:
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail("multi-process children timed out:\n" + _logs(tmp_path))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()  # JAX ignores SIGTERM
                child.wait()
    for child in children:
        assert child.returncode == 0, _logs(tmp_path)

    reports = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    reference = {
        name: multiprocess_child.train_losses(config, jax.devices()[:1])
        for name, config in multiprocess_child.MESH_CONFIGS.items()
    }
    for process_id, report in enumerate(reports):
        assert report["process_shard"] == [process_id, 2]
        assert report["is_main"] == (process_id == 0)
        assert report["device_count"] == 2 and report["local_device_count"] == 1
        assert "already initialized with 2 processes" in report["mismatch_error"]
        for name, losses in reference.items():
            assert losses[-1] < losses[0]  # the model learns: the steps are not no-ops
            np.testing.assert_allclose(report["losses"][name], losses, rtol=1e-6, atol=1e-6)


def _logs(tmp_path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("child*.log")))
