"""Gradients are summed across replicas and FSDP shards in float32 while the model computes in
bfloat16, with float32 master weights and optimizer state: read in the train step compiled by
XLA's TPU compiler for a real topology (compile-only devices). With flax's layers, 149 of the
155 gradient all-reduces of this program were bfloat16."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import pytest

from octo_like.training.compile_check import compile_train_step
from tests.training.test_compile_check import _typed

BF16 = ("--config.model.dtype=bfloat16", "--config.data.batch_size=16")


@pytest.mark.parametrize(
    "mesh",
    [
        (),  # data parallel over 4 chips
        ("--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size_mb=0"),  # data 2 x fsdp 2
    ],
    ids=["data4", "data2-fsdp2"],
)
def test_no_gradient_is_summed_across_devices_in_bfloat16(tmp_path, mesh):
    config = _typed("laptop", str(tmp_path / "run"), *BF16, *mesh)
    report = compile_train_step(config, "v5e:2x2")
    assert report.resolved["dtype"] == "bfloat16"
    reductions = report.gradient_reductions
    assert reductions.get("f32", 0) > 50, reductions  # the check is not vacuous
    assert "bf16" not in reductions, reductions
    if mesh:
        assert report.mesh == {"data": 2, "fsdp": 2}
        assert "all-gather" in report.collectives  # sharded weights are gathered


def test_master_weights_and_optimizer_state_are_float32(tmp_path):
    from flax import nnx

    from octo_like.model.input_spec import spec_from_batch
    from octo_like.model.octo_module import OctoModule
    from octo_like.training import compile_check, sharding
    from octo_like.training.abstract_inputs import abstract_batch
    from octo_like.training.train_program import build_program

    config = _typed("laptop", str(tmp_path / "run"), *BF16)
    batch = abstract_batch(config)
    model_config, vocab, _ = compile_check._language_setup(config.model, str(tmp_path))
    spec = spec_from_batch(batch)
    module = nnx.eval_shape(
        lambda: OctoModule(model_config, spec, vocab, rngs=nnx.Rngs(0), platform="tpu")
    )
    assert module.dtype == jnp.bfloat16
    devices = compile_check.topology_devices("v5e:2x2")
    program = build_program(
        config, module, sharding.make_mesh(config.mesh, devices), jax.random.key(0), abstract=True
    )
    params = jax.tree.leaves(program.state.params)
    moments = [x for x in jax.tree.leaves(program.state.opt_state) if x.ndim > 0]
    assert {x.dtype for x in params} == {jnp.dtype(jnp.float32)}
    by_dtype = collections.Counter(str(x.dtype) for x in moments)
    assert set(by_dtype) == {"float32"} and len(moments) >= len(params), by_dtype
