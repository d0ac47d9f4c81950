"""Gradients are summed across replicas and FSDP shards in float32 while the model computes in
bfloat16, with float32 master weights and optimizer state: read in the train step compiled by
XLA's TPU compiler for a real topology (compile-only devices). With flax's layers, 149 of the
155 gradient all-reduces of this program were bfloat16 (161 of 166 with FSDP).

Under FSDP some reductions stay bfloat16 on purpose: forward gathers of bf16-cast weight shards
that XLA writes as an all-reduce, and partial sums of activations (and their gradients) where a
product contracts an fsdp-sharded feature axis. Gradients are told apart by their op metadata
(a transpose) and a parameter's shape (`compile_check.parameter_gradient_reductions`)."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import pytest

from octo_like.training.pods.compile_check import compile_train_step
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
@pytest.mark.slow
def test_no_gradient_is_summed_across_devices_in_bfloat16(tmp_path, mesh):
    config = _typed("laptop", str(tmp_path / "run"), *BF16, *mesh)
    report = compile_train_step(config, "v5e:2x2")
    assert report.resolved["dtype"] == "bfloat16"
    reductions = report.gradient_reductions
    assert reductions.get("f32", 0) > 50, reductions  # the check is not vacuous
    assert "bf16" not in reductions, reductions
    if not mesh:
        # Pure data parallelism sums nothing but gradients (besides an int32 count of the
        # loss): no bf16 reduction at all, whatever XLA's combiners left of the ops' metadata.
        for kind in ("all-reduce", "reduce-scatter"):
            assert "bf16" not in report.collectives.get(kind, {}).get("by_dtype", {}), kind
    if mesh:
        assert report.mesh == {"data": 2, "fsdp": 2}
        assert "all-gather" in report.collectives  # sharded weights are gathered


@pytest.mark.slow
def test_gradients_summed_across_slices_stay_float32(tmp_path):
    """Two slices joined over DCN: XLA splits each gradient sum into a reduce-scatter inside
    the slice, an all-reduce of the shard across slices and an all-gather, on padded shards
    without the ops' metadata, so gradients are no longer told apart by shape. With pure data
    parallelism every sum is a gradient's (or the int32 loss count): none may be bfloat16."""
    config = _typed("laptop", str(tmp_path / "run"), *BF16)
    report = compile_train_step(config, "v5e:2x2", num_slices=2)
    assert report.chips == 8 and report.resolved["dtype"] == "bfloat16"
    scattered = report.collectives.get("reduce-scatter", {}).get("by_dtype", {})
    assert scattered.get("f32", 0) > 20, report.collectives  # the decomposed sums were found
    for kind in ("all-reduce", "reduce-scatter"):
        assert "bf16" not in report.collectives.get(kind, {}).get("by_dtype", {}), kind


def test_master_weights_and_optimizer_state_are_float32(tmp_path):
    from flax import nnx

    from octo_like.model.input_spec import spec_from_batch
    from octo_like.model.octo_module import OctoModule
    from octo_like.training.parallel import sharding
    from octo_like.training.pods import compile_check
    from octo_like.training.run.abstract_inputs import abstract_batch
    from octo_like.training.run.train_program import build_program

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


def test_collectives_are_read_from_sync_async_and_tuple_instructions():
    """`hlo_collectives` reads every kind, sync and ``-start`` forms (once, not again at
    ``-done``), one entry per array of a tuple, bytes from the result shapes."""
    from octo_like.training.pods.hlo_collectives import collectives, summarize

    gradient = 'metadata={op_name="jit(train_step)/transpose(jvp())/dot_general"}'
    hlo = "\n".join([
        "  %all-reduce.8 = (bf16[64]{0:T(256)(128)(2,1)S(1)}, /*index=1*/f32[192,4]{1,0:T(8,128)})"
        f" all-reduce(%a, %b), channel_id=1, to_apply=%add, {gradient}",
        "  %ars = f32[512]{0} all-reduce-start(%x), channel_id=2, to_apply=%add",
        "  %ard = f32[512]{0} all-reduce-done(%ars)",
        "  %ags = (bf16[64,8]{1,0}, bf16[128,8]{1,0}) all-gather-start(%p), dimensions={0}",
        "  %agd = bf16[128,8]{1,0} all-gather-done(%ags)",
        "  %rs = f32[2,4]{1,0} reduce-scatter(%r), dimensions={0}, to_apply=%add",
        "  ROOT %a2a = (s32[4]{0}, s32[4]{0}) all-to-all(%s, %t)",
        "  %cps = (f32[8]{0}, f32[8]{0}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%u)",
        "  %cpd = f32[8]{0} collective-permute-done(%cps)",
        "  %fusion = bf16[8]{0} fusion(%all-reduce.8), kind=kLoop",
    ])  # fmt: skip
    found = collectives(hlo)
    assert [(c.kind, c.dtype, c.shape, c.bytes) for c in found] == [
        ("all-reduce", "bf16", (64,), 128),
        ("all-reduce", "f32", (192, 4), 3072),
        ("all-reduce", "f32", (512,), 2048),
        ("all-gather", "bf16", (128, 8), 2048),  # the result, not the echoed operand
        ("reduce-scatter", "f32", (2, 4), 32),
        ("all-to-all", "s32", (4,), 16),
        ("all-to-all", "s32", (4,), 16),
        ("collective-permute", "f32", (8,), 32),  # without the u32[] context scalars
    ]
    assert [c.is_gradient_reduction for c in found[:3]] == [True, True, False]
    summary = summarize(found)
    assert summary["all-reduce"] == {"count": 3, "bytes": 5248, "by_dtype": {"bf16": 1, "f32": 2}}
