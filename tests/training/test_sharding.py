"""Mesh and sharding rules on 8 fake CPU devices: a (data=2, fsdp=4) mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from octo_like.training.parallel import sharding
from octo_like.training.parallel.sharding import DATA_AXIS, FSDP_AXIS, MeshConfig

CONFIG = MeshConfig(data=2, fsdp=4)


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(CONFIG)


def _params() -> dict:
    """One 16 MiB matrix (larger axis 4096 divisible by 4), plus small and odd arrays."""
    return {
        "transformer": {
            "blocks": [
                {
                    "mlp": {
                        "kernel": jnp.zeros((1024, 4096), jnp.float32),
                        "bias": jnp.zeros((4096,), jnp.float32),
                    }
                }
            ],
            # 5 MiB but no axis divisible by 4: replicated.
            "odd": jnp.zeros((1023, 1281), jnp.float32),
        },
        "embed": jnp.zeros((4096, 1024), jnp.bfloat16),  # 8 MiB, largest axis first
        "scale": jnp.ones((), jnp.float32),
    }


def test_make_mesh_shapes_and_errors():
    mesh = sharding.make_mesh(CONFIG)
    assert mesh.shape == {DATA_AXIS: 2, FSDP_AXIS: 4}
    assert sharding.make_mesh(MeshConfig(fsdp=2)).shape == {DATA_AXIS: 4, FSDP_AXIS: 2}
    assert sharding.make_mesh(MeshConfig(data=1, fsdp=-1)).shape == {DATA_AXIS: 1, FSDP_AXIS: 8}
    assert sharding.make_mesh(MeshConfig(), jax.devices()[:2]).shape[DATA_AXIS] == 2
    with pytest.raises(ValueError, match=r"data=2 x fsdp=2 = 4 devices, but a slice has 8"):
        sharding.make_mesh(MeshConfig(data=2, fsdp=2))
    with pytest.raises(ValueError, match="fsdp=3 does not divide the 8 devices per slice"):
        sharding.make_mesh(MeshConfig(fsdp=3))
    with pytest.raises(ValueError, match="only one of data / fsdp may be -1"):
        MeshConfig(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="must be -1"):
        MeshConfig(data=0)
    with pytest.raises(ValueError, match="'shard' is not one of"):
        MeshConfig(rules=((".*", "shard"),))
    with pytest.raises(ValueError, match="not a valid regex"):
        MeshConfig(rules=(("(", "fsdp"),))


def test_batch_sharding_splits_eight_ways(mesh):
    batch = jax.device_put(np.arange(16 * 3).reshape(16, 3), sharding.batch_sharding(mesh))
    assert len(batch.addressable_shards) == 8
    rows = sorted(int(np.asarray(s.data)[0, 0]) // 3 for s in batch.addressable_shards)
    assert rows == list(range(0, 16, 2))  # distinct slices of 2 rows on every device
    assert {s.data.shape for s in batch.addressable_shards} == {(2, 3)}


def test_default_fsdp_heuristic(mesh):
    shardings = sharding.parameter_shardings(_params(), mesh, CONFIG)
    mlp = shardings["transformer"]["blocks"][0]["mlp"]
    assert mlp["kernel"].spec == P(None, FSDP_AXIS)
    assert mlp["bias"].spec == P()  # 16 KiB: below the threshold
    assert shardings["transformer"]["odd"].spec == P()
    assert shardings["embed"].spec == P(FSDP_AXIS, None)
    assert shardings["scale"].spec == P()

    placed = jax.device_put(_params(), shardings)
    kernel = placed["transformer"]["blocks"][0]["mlp"]["kernel"]
    assert kernel.sharding.spec == P(None, FSDP_AXIS)
    assert {s.data.shape for s in kernel.addressable_shards} == {(1024, 1024)}
    # Replicated over data: the two devices of each fsdp column hold the same slice.
    assert len({str(s.index) for s in kernel.addressable_shards}) == 4
    odd = placed["transformer"]["odd"]
    assert {s.data.shape for s in odd.addressable_shards} == {(1023, 1281)}


def test_abstract_params_get_the_same_shardings(mesh):
    abstract = jax.eval_shape(_params)
    assert isinstance(abstract["embed"], jax.ShapeDtypeStruct)
    assert sharding.parameter_shardings(abstract, mesh, CONFIG) == sharding.parameter_shardings(
        _params(), mesh, CONFIG
    )


def test_rules_override_first_match_wins(mesh):
    config = MeshConfig(
        data=2,
        fsdp=4,
        rules=(
            (r"mlp/kernel$", "replicate"),
            (r"mlp/", "fsdp"),  # bias: small, but forced; kernel already claimed above
        ),
    )
    shardings = sharding.parameter_shardings(_params(), mesh, config)
    mlp = shardings["transformer"]["blocks"][0]["mlp"]
    assert mlp["kernel"].spec == P()
    assert mlp["bias"].spec == P(FSDP_AXIS)
    assert shardings["embed"].spec == P(FSDP_AXIS, None)  # untouched: default heuristic

    unmatched = MeshConfig(data=2, fsdp=4, rules=(("decoder/", "fsdp"),))
    with pytest.raises(ValueError, match=r"\['decoder/'\] match no parameter path"):
        sharding.parameter_shardings(_params(), mesh, unmatched)
    impossible = MeshConfig(data=2, fsdp=4, rules=(("odd", "fsdp"),))
    with pytest.raises(ValueError, match="'transformer/odd' of shape \\(1023, 1281\\)"):
        sharding.parameter_shardings(_params(), mesh, impossible)


def test_nnx_state_paths(mesh):
    class Block(nnx.Module):
        def __init__(self, rngs):
            self.mlp = nnx.Linear(8, 16, rngs=rngs)

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.blocks = nnx.List([Block(rngs) for _ in range(2)])

    state = nnx.state(nnx.eval_shape(lambda: Model(nnx.Rngs(0))), nnx.Param)
    config = MeshConfig(data=2, fsdp=4, rules=((r"^blocks/1/mlp/kernel$", "fsdp"),))
    shardings = sharding.parameter_shardings(state, mesh, config)
    assert shardings["blocks"][1]["mlp"]["kernel"].get_value().spec == P(None, FSDP_AXIS)
    assert shardings["blocks"][0]["mlp"]["kernel"].get_value().spec == P()
    table = sharding.describe_shardings(shardings)
    assert "blocks/1/mlp/kernel" in table and "'fsdp'" in table
    assert table.splitlines()[-1] == "4 arrays (shapes unknown)"


def test_jitted_sgd_step_keeps_shardings(mesh):
    config = MeshConfig(data=2, fsdp=4, fsdp_min_size_mb=0.0)
    rng = np.random.default_rng(0)
    host = {
        "w": rng.normal(size=(16, 8)).astype(np.float32),
        "b": np.zeros((8,), np.float32),
        "odd": np.ones((3,), np.float32),
    }
    param_shardings = sharding.parameter_shardings(host, mesh, config)
    assert param_shardings["w"].spec == P(FSDP_AXIS, None)
    assert param_shardings["odd"].spec == P()
    batch_sharding = sharding.batch_sharding(mesh)
    batch = {
        "x": rng.normal(size=(32, 16)).astype(np.float32),
        "y": rng.normal(size=(32, 8)).astype(np.float32),
    }

    def loss_fn(params, batch):
        prediction = batch["x"] @ params["w"] + params["b"] + params["odd"].sum()
        return jnp.mean((prediction - batch["y"]) ** 2)

    def step(params, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), loss

    jitted = jax.jit(
        step,
        in_shardings=(param_shardings, batch_sharding),
        out_shardings=(param_shardings, sharding.replicated(mesh)),
    )
    params = jax.device_put(host, param_shardings)
    device_batch = jax.device_put(batch, batch_sharding)
    losses = []
    for _ in range(3):
        params, loss = jitted(params, device_batch)
        losses.append(float(loss))
    for name, value in params.items():
        assert value.sharding == param_shardings[name], name
    assert {s.data.shape for s in params["w"].addressable_shards} == {(4, 8)}

    expected_params, expected_losses = dict(host), []
    for _ in range(3):
        expected_params, loss = jax.jit(step)(expected_params, batch)
        expected_losses.append(float(loss))
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    assert losses[-1] < losses[0]


def test_adam_state_follows_params(mesh):
    params = _params()
    param_shardings = sharding.parameter_shardings(params, mesh, CONFIG)
    abstract_state = jax.eval_shape(optax.adam(1e-3).init, params)
    state_shardings = sharding.opt_state_shardings(abstract_state, param_shardings, mesh)
    adam = state_shardings[0]
    assert adam.count.spec == P()
    for moments in (adam.mu, adam.nu):
        assert jax.tree.map(lambda s: s.spec, moments) == jax.tree.map(
            lambda s: s.spec, param_shardings
        )
    state = jax.jit(optax.adam(1e-3).init, out_shardings=state_shardings)(params)
    assert state[0].mu["embed"].sharding.spec == P(FSDP_AXIS, None)


def test_opt_state_leaf_of_another_shape_is_replicated(mesh):
    param_shardings = {"w": NamedSharding(mesh, P(FSDP_AXIS, None))}
    opt_state = {
        "mu": {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32)},
        "row_stats": {"w": jax.ShapeDtypeStruct((8,), jnp.float32)},  # factored: rank 1
        "odd": {"w": jax.ShapeDtypeStruct((6, 4), jnp.float32)},  # 6 not divisible by 4
        "count": jax.ShapeDtypeStruct((), jnp.int32),
    }
    shardings = sharding.opt_state_shardings(opt_state, param_shardings, mesh)
    assert shardings["mu"]["w"].spec == P(FSDP_AXIS, None)
    assert shardings["row_stats"]["w"].spec == P()
    assert shardings["odd"]["w"].spec == P()
    assert shardings["count"].spec == P()
    with pytest.raises(TypeError, match="not a NamedSharding"):
        sharding.opt_state_shardings(opt_state, {"w": P()}, mesh)


def test_describe_shardings_table(mesh):
    placed = jax.device_put(
        {"a": np.zeros((8, 4), np.float32), "b": np.zeros((3,), np.int32)},
        {"a": NamedSharding(mesh, P(FSDP_AXIS)), "b": sharding.replicated(mesh)},
    )
    lines = sharding.describe_shardings(placed).splitlines()
    assert lines[0].split() == ["path", "shape", "dtype", "spec", "per", "device"]
    assert lines[1].split()[:3] == ["a", "(8,", "4)"] and "(2, 4)" in lines[1]
    assert "replicated" in lines[2] and lines[2].startswith("b ")
    assert lines[-1].startswith("2 arrays")
