"""Device-time summary read back from a real profiler trace, and kernel categories."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from octo_like.training.benchmarks import trace_summary


@pytest.mark.parametrize(
    "kernel, category",
    [
        # kernel names seen in an H100 trace of the base train step
        ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26", "attention"),
        ("void cudnn::fusion::compute_dot_do_o_specialized<true, 64>(void const*)", "attention"),
        ("nvjet_sm90_tst_128x160_64x5_1x2_h_bz_TNT", "matmul"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
        ("sm90_xmma_wgrad_indexed_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc", "convolution"),
        (
            "void convolve_common_engine_float_NHWC<__nv_bfloat16, __nv_bfloat16, 128>",
            "convolution",
        ),
        ("wrapped_convert_7", "elementwise"),  # 'convert' is not a convolution
        ("loop_convert_multiply_fusion_9", "elementwise"),
        ("input_add_reduce_fusion_83", "elementwise"),
        ("input_transpose_fusion_106", "copy"),
        ("Memset 3", "copy"),
        ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "collective"),
        ("all-reduce-start.1", "collective"),
        ("ynn_fusion.282", "matmul"),  # XLA:CPU's YNNPACK dot/convolution kernels
    ],
)
def test_kernel_categories(kernel, category):
    assert trace_summary.classify(kernel) == category


TRACE_THREE_CALLS = """
import sys, jax, jax.numpy as jnp
step = jax.jit(lambda x: jnp.sin(jnp.dot(x, x)).sum())
x = jnp.ones((256, 256))
step(x).block_until_ready()
with jax.profiler.trace(sys.argv[1]):
    for _ in range(3):
        step(x).block_until_ready()
"""


def test_summary_of_a_traced_cpu_step(tmp_path):
    """A jitted matmul + sine traced for 3 calls: the dot shows up as one call per step, the
    categories add up to the total, and per-step times are the trace's totals / steps. Traced
    in its own process: once a process has loaded libtpu's compile-only topologies (the pod
    tests beside this one), its CPU traces hold no XLA op events."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", TRACE_THREE_CALLS, str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    trace = trace_summary.latest_trace(str(tmp_path))
    ops = trace_summary.device_ops(trace, steps=3)
    assert ops, "no XLA op events in the trace"
    assert [o.ms_per_step for o in ops] == sorted((o.ms_per_step for o in ops), reverse=True)
    assert all(o.ms_per_step > 0 and o.calls_per_step > 0 for o in ops)
    assert {o.category for o in ops} <= set(trace_summary.CATEGORIES)
    # the sine and the sum are elementwise / reduction work in some fusion
    assert any(o.category == "elementwise" for o in ops)
    categories = trace_summary.by_category(ops)
    assert categories["total"] == pytest.approx(
        sum(categories[c] for c in trace_summary.CATEGORIES)
    )

    once = trace_summary.device_ops(trace, steps=1)
    assert sum(o.ms_per_step for o in once) == pytest.approx(3 * categories["total"])
    assert {o.kernel: o.calls_per_step for o in once} == {
        o.kernel: 3 * o.calls_per_step for o in ops
    }
    text = trace_summary.format_summary(ops, top=5)
    assert "device time per step by category" in text and ops[0].kernel[:40] in text


def test_missing_trace_and_bad_step_count_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        trace_summary.latest_trace(str(tmp_path))
    with pytest.raises(ValueError, match="steps"):
        trace_summary.device_ops(str(tmp_path / "none.xplane.pb"), steps=0)
