"""model/precision.py: gradients equal plain autodiff's, and bfloat16 compute stays bfloat16.

The float32 parameter gradient must come from bfloat16 operands (an f32 product of bf16 values,
as the accelerator's bf16 units compute it), not from operands upcast to float32: on an H100 the
upcast stem convolutions ran as TF32 kernels at twice the time, and float32-output activation
products became separate GEMM fusions (192 -> 184 ms per `base` step, docs/results.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from octo_like.model import precision
from tests.jaxprs import equations

F32, BF16 = jnp.float32, jnp.bfloat16
NHWC = ("NHWC", "HWIO", "NHWC")


def _vjp_jaxpr(f, *args):
    """The jaxpr of f's forward pass and its pullback applied to a cotangent of ones."""

    def forward_and_back(*args):
        y, pull = jax.vjp(f, *args)
        return y, pull(jnp.ones_like(y))

    return jax.make_jaxpr(forward_and_back)(*args)


CONV_CASES = [  # (input NHWC, kernel size, stride, padding)
    ((2, 16, 16, 3), 3, 2, ((1, 1), (1, 1))),  # the stems' stride-2 3x3
    ((2, 17, 15, 4), 3, 2, "SAME"),  # odd sizes: the far side padded differently
    ((2, 32, 32, 6), 16, 16, "VALID"),  # the 16x16 patch conv
    ((3, 8, 8, 5), 1, 1, "SAME"),  # keypoint detectors
    ((2, 13, 11, 3), 5, 3, ((2, 1), (0, 2))),  # asymmetric padding, stride not dividing
]


@pytest.mark.parametrize("shape,size,stride,padding", CONV_CASES)
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_conv_gradients_equal_autodiff(shape, size, stride, padding, dtype):
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(size * stride), 3)
    x = jax.random.normal(kx, shape).astype(dtype)
    kernel = 0.1 * jax.random.normal(kk, (size, size, shape[-1], 7))  # float32 master weight
    args = dict(window_strides=(stride, stride), padding=padding, dimension_numbers=NHWC)

    y, pull = jax.vjp(lambda x, k: precision.conv(x, k, **args), x, kernel)
    g = jax.random.normal(kg, y.shape).astype(y.dtype)
    dx, dkernel = pull(g)

    # Reference: the same bf16-rounded values, multiplied and accumulated in float32.
    reference = lambda x, k: lax.conv_general_dilated(x, k, **args)
    y_ref, pull_ref = jax.vjp(reference, x.astype(F32), kernel.astype(dtype).astype(F32))
    dx_ref, dkernel_ref = pull_ref(g.astype(F32))

    assert (y.dtype, dx.dtype, dkernel.dtype) == (dtype, dtype, F32)
    assert dx.shape == x.shape and dkernel.shape == kernel.shape
    # The kernel gradient is exact up to summation order; bf16 outputs are rounded once.
    np.testing.assert_allclose(dkernel, dkernel_ref, rtol=1e-4, atol=1e-4)
    tolerance = 1e-5 if dtype == F32 else 2e-2
    scale = float(jnp.max(jnp.abs(dx_ref)))
    np.testing.assert_allclose(np.asarray(dx, np.float32), dx_ref, atol=tolerance * scale)
    np.testing.assert_allclose(np.asarray(y, np.float32), y_ref, atol=tolerance * 10)


def test_bf16_conv_backward_reads_only_bf16_operands():
    x = jnp.ones((2, 16, 16, 3), BF16)
    kernel = jnp.ones((3, 3, 3, 8), F32)
    f = lambda x, k: precision.conv(
        x, k, window_strides=(2, 2), padding=((1, 1), (1, 1)), dimension_numbers=NHWC
    )
    convs = equations(_vjp_jaxpr(f, x, kernel).jaxpr, "conv_general_dilated")
    assert len(convs) >= 3  # forward, input gradient, kernel gradient
    for eqn in convs:
        assert [v.aval.dtype for v in eqn.invars] == [BF16, BF16], eqn
    # Only the kernel gradient is written in float32.
    f32_out = {eqn.outvars[0].aval.shape for eqn in convs if eqn.outvars[0].aval.dtype == F32}
    assert f32_out == {kernel.shape}


def test_matmul_gradients_and_dtypes():
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(1), 3)
    x = jax.random.normal(kx, (4, 6, 32)).astype(BF16)
    kernel = 0.1 * jax.random.normal(kk, (32, 24))
    y, pull = jax.vjp(precision.matmul, x, kernel)
    g = jax.random.normal(kg, y.shape).astype(BF16)
    dx, dkernel = pull(g)
    assert (y.dtype, dx.dtype, dkernel.dtype) == (BF16, BF16, F32)

    y_ref, pull_ref = jax.vjp(lambda x, k: x @ k, x.astype(F32), kernel.astype(BF16).astype(F32))
    dx_ref, dkernel_ref = pull_ref(g.astype(F32))
    np.testing.assert_allclose(dkernel, dkernel_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dx, np.float32), dx_ref, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(np.asarray(y, np.float32), y_ref, rtol=2e-2, atol=2e-2)

    dots = equations(_vjp_jaxpr(precision.matmul, x, kernel).jaxpr, "dot_general")
    assert len(dots) >= 3
    for eqn in dots:
        assert [v.aval.dtype for v in eqn.invars] == [BF16, BF16], eqn
    # Activation-sized products are written in bf16; only the [k, n] kernel gradient in f32.
    f32_out = {eqn.outvars[0].aval.shape for eqn in dots if eqn.outvars[0].aval.dtype == F32}
    assert f32_out == {kernel.shape}


def test_conv_refuses_other_layouts():
    x, kernel = jnp.ones((1, 3, 8, 8), BF16), jnp.ones((4, 3, 3, 3), F32)
    with pytest.raises(ValueError, match="NHWC/HWIO only"):
        precision.conv(
            x, kernel, window_strides=(1, 1), padding="SAME",
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )  # fmt: skip
