"""One process of the multi-process test, and the tiny model it shares with the reference run.

Run as ``python -m tests.training.multiprocess_child OUT.json`` with one CPU device and the
OCTO_* distributed variables set; writes what it saw and the losses of a few SGD steps of a
linear regression on this process's half of a fixed global batch.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from octo_like.training.parallel import distributed, sharding

GLOBAL_BATCH = 16
FEATURES, OUTPUTS = 8, 4
STEPS = 3
LEARNING_RATE = 0.1
# Every array is sharded over fsdp (threshold 0), so parameters are split across processes.
MESH_CONFIGS = {
    "data2": sharding.MeshConfig(data=-1, fsdp=1, fsdp_min_size_mb=0.0),
    "fsdp2": sharding.MeshConfig(data=1, fsdp=-1, fsdp_min_size_mb=0.0),
}


def global_data() -> dict[str, np.ndarray]:
    """x float32[GLOBAL_BATCH, FEATURES], y float32[GLOBAL_BATCH, OUTPUTS] (noisy linear)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH, FEATURES)).astype(np.float32)
    true_w = rng.normal(size=(FEATURES, OUTPUTS)).astype(np.float32)
    y = (x @ true_w + 0.1 * rng.normal(size=(GLOBAL_BATCH, OUTPUTS))).astype(np.float32)
    return {"x": x, "y": y}


def initial_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "w": rng.normal(size=(FEATURES, OUTPUTS)).astype(np.float32),
        "b": np.zeros(OUTPUTS, np.float32),
    }


def _loss(params, batch):
    prediction = batch["x"] @ params["w"] + params["b"]
    return jnp.mean((prediction - batch["y"]) ** 2)


def _sgd_step(params, batch):
    loss, grads = jax.value_and_grad(_loss)(params, batch)
    return jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads), loss


def train_losses(mesh_config: sharding.MeshConfig, devices=None) -> list[float]:
    """Losses of `STEPS` SGD steps with this process's rows of the global batch."""
    mesh = sharding.make_mesh(mesh_config, devices)
    host_params = initial_params()
    param_shardings = sharding.parameter_shardings(host_params, mesh, mesh_config)
    params = {
        name: jax.make_array_from_callback(
            value.shape, param_shardings[name], lambda i, v=value: v[i]
        )
        for name, value in host_params.items()
    }
    shard = distributed.process_shard()
    rows = GLOBAL_BATCH // shard.count
    local = {k: v[shard.index * rows : (shard.index + 1) * rows] for k, v in global_data().items()}
    local["dataset_name"] = np.array([b"synthetic"] * rows, dtype=object)
    batch_sharding = sharding.batch_sharding(mesh)
    batch = distributed.global_batch(local, batch_sharding, GLOBAL_BATCH, drop_strings=True)
    step = jax.jit(
        _sgd_step,
        in_shardings=(param_shardings, batch_sharding),
        out_shardings=(param_shardings, sharding.replicated(mesh)),
    )
    losses = []
    for _ in range(STEPS):
        params, loss = step(params, batch)
        losses.append(float(loss))
    for name, value in params.items():
        if value.sharding.spec != param_shardings[name].spec:
            raise AssertionError(f"{name} lost its sharding: {value.sharding.spec}")
    return losses


def main(out_path: str) -> None:
    distributed.initialize(distributed.DistributedConfig())
    distributed.initialize(distributed.DistributedConfig())  # idempotent
    try:
        distributed.initialize(distributed.DistributedConfig(enabled=True, num_processes=3))
        mismatch_error = None
    except (RuntimeError, ValueError) as e:
        mismatch_error = str(e)
    report = {
        "process_shard": [distributed.process_shard().index, distributed.process_shard().count],
        "is_main": distributed.is_main_process(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "mismatch_error": mismatch_error,
        "losses": {name: train_losses(config) for name, config in MESH_CONFIGS.items()},
    }
    with open(out_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
