"""Parameters used in bfloat16, their gradients summed across devices in float32.

With bfloat16 compute, a layer casts its float32 weight to bf16 and its weight gradient is a
product (or a sum) contracting the batch axis. When the batch is split over devices, XLA's
partitioner inserts the cross-replica sum there, and XLA moves the narrowing convert of the
cast's transpose in front of it: compiled for a v4-128, 264 of 268 gradient all-reduces of
`base` were bfloat16, i.e. gradients summed over 64 replicas in 8 bits of mantissa (passing
``preferred_element_type=float32`` to flax's layers does not change that: the kernel is cast
before the product). The operations below take the float32 parameter itself and define their
backward pass so that the parameter's gradient is computed, and reduced, in float32 from the
start, while activations and their gradients stay in the compute dtype:

- `matmul(x, kernel)`: ``x[..., k] @ kernel[k, n]``; bf16 x bf16 products accumulating in f32
  (the activations and their gradients written in bf16, the kernel's gradient in f32);
- `add_param(y, p)` / `mul_param(y, p)`: ``y + p`` / ``y * p`` broadcast from the right
  (biases, positional embeddings, scales); the gradient of `p` sums float32 cotangents;
- `conv(x, kernel, ...)`: `lax.conv_general_dilated` whose kernel gradient is f32, computed
  (like the matmul's) from bf16 operands: float32 operands would run the stems' backward as
  TF32 convolutions, twice the time on an H100;
- `einsum_param(spec, x, p)` for the rest.

`Linear` and `Conv` are `nnx` layers with flax's parameter names (``kernel``, ``bias``) built on
them, so checkpoints load either way. Parameters stay float32 (master weights), and so does the
optimizer state that mirrors them. `tests/training/test_gradient_precision.py` reads the
compiled TPU program and fails on any bf16 gradient reduction.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

F32 = jnp.float32


def _reduce_to(values: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Sums `values` (float32) over the axes broadcasting added to reach it from `shape`."""
    lead = values.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and values.shape[lead + i] != 1
    )
    return jnp.sum(values, axis=axes, keepdims=False).reshape(shape)


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x: float[..., k] (compute dtype); kernel: float32[k, n] -> x.dtype[..., n]."""
    return lax.dot_general(x, kernel.astype(x.dtype), (((x.ndim - 1,), (0,)), ((), ())))


def _matmul_fwd(x, kernel):
    return matmul(x, kernel), (x, kernel)


def _matmul_bwd(saved, g):
    """Activations' gradient in the compute dtype (as the forward: the accelerator accumulates
    in float32 and writes x.dtype, so no float32 copy of an activation-sized result is made);
    the kernel's gradient from the same compute-dtype operands, written in float32."""
    x, kernel = saved
    g = g.astype(x.dtype)
    dx = lax.dot_general(g, kernel.astype(x.dtype), (((g.ndim - 1,), (1,)), ((), ())))
    lead = tuple(range(x.ndim - 1))
    dkernel = lax.dot_general(x, g, ((lead, lead), ((), ())), preferred_element_type=F32)
    return dx, dkernel.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


@jax.custom_vjp
def add_param(y: jax.Array, p: jax.Array) -> jax.Array:
    """``y + p`` in y's dtype; p (float32) broadcasts from the right."""
    return y + p.astype(y.dtype)


def _add_fwd(y, p):
    return add_param(y, p), p.shape


def _add_bwd(shape, g):
    return g, _reduce_to(g.astype(F32), shape)


add_param.defvjp(_add_fwd, _add_bwd)


@jax.custom_vjp
def mul_param(y: jax.Array, p: jax.Array) -> jax.Array:
    """``y * p`` in y's dtype; p (float32) broadcasts from the right."""
    return y * p.astype(y.dtype)


def _mul_fwd(y, p):
    return mul_param(y, p), (y, p)


def _mul_bwd(saved, g):
    y, p = saved
    return g * p.astype(g.dtype), _reduce_to(g.astype(F32) * y.astype(F32), p.shape)


mul_param.defvjp(_mul_fwd, _mul_bwd)


def einsum_param(spec: str, x: jax.Array, p: jax.Array) -> jax.Array:
    """``einsum(spec, x, p)`` in x's dtype with p's gradient in float32 (small products only:
    the backward pass computes p's gradient from float32 operands)."""

    @jax.custom_vjp
    def product(x, p):
        return jnp.einsum(spec, x, p.astype(x.dtype), preferred_element_type=F32).astype(x.dtype)

    def fwd(x, p):
        return product(x, p), (x, p)

    def bwd(saved, g):
        x, p = saved
        exact = lambda x_, p_: jnp.einsum(spec, x_, p_, preferred_element_type=F32)
        _, pullback = jax.vjp(exact, x.astype(F32), p)
        dx, dp = pullback(g.astype(F32))
        return dx.astype(x.dtype), dp

    product.defvjp(fwd, bwd)
    return product(x, p)


def _conv_kernel_gradient(
    x: jax.Array, g: jax.Array, kernel_shape, *, window_strides, padding, dimension_numbers
) -> jax.Array:
    """float32 gradient of an ``NHWC`` x ``HWIO`` convolution's kernel from compute-dtype `x`
    and cotangent `g`: itself a convolution, of `x` (channels as batch) by `g` (batch as input
    features) dilated by the stride, so the accelerator reads bf16 and accumulates in float32.
    (`jax.vjp` cannot do this: its kernel cotangent has the dtype the kernel had in the product.)
    """
    spatial_in, window = x.shape[1:3], tuple(kernel_shape[:2])
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial_in, window, window_strides, padding)
    spatial_out = g.shape[1:3]
    pads = []
    for n_in, k, s, n_out, (lo, _) in zip(
        spatial_in, window, window_strides, spatial_out, padding, strict=True
    ):
        # the far side is padded so that every strided output position sees its full window
        pads.append((lo, (n_out - 1) * s + 1 - n_in + k - lo - 1))
    return lax.conv_general_dilated(
        x, g, window_strides=(1, 1), padding=pads, rhs_dilation=tuple(window_strides),
        dimension_numbers=("CHWN", "IHWO", "HWNC"), preferred_element_type=F32,
    )  # fmt: skip


def conv(x: jax.Array, kernel: jax.Array, *, window_strides, padding,
         dimension_numbers=("NHWC", "HWIO", "NHWC")) -> jax.Array:  # fmt: skip
    """`lax.conv_general_dilated` in x's dtype with a float32 ``HWIO`` kernel: the input's
    gradient in x's dtype, the kernel's from x-dtype operands written in float32."""
    if tuple(dimension_numbers) != ("NHWC", "HWIO", "NHWC"):
        raise ValueError(f"precision.conv supports NHWC/HWIO only, got {dimension_numbers}")
    window_strides = tuple(window_strides)
    conv_args = dict(window_strides=window_strides, padding=padding,
                     dimension_numbers=tuple(dimension_numbers))  # fmt: skip

    def forward(x, kernel):
        return lax.conv_general_dilated(x, kernel.astype(x.dtype), **conv_args)

    convolve = jax.custom_vjp(forward)

    def fwd(x, kernel):
        return convolve(x, kernel), (x, kernel)

    def bwd(saved, g):
        x, kernel = saved
        g = g.astype(x.dtype)
        # x -> conv(x, kernel) is linear: its transpose is the input's gradient, without the
        # forward convolution a `jax.vjp` would trace again.
        (dx,) = jax.linear_transpose(lambda x_: forward(x_, kernel), x)(g)
        dkernel = _conv_kernel_gradient(x, g, kernel.shape, **conv_args)
        return dx, dkernel.astype(kernel.dtype)

    convolve.defvjp(fwd, bwd)
    return convolve(x, kernel)


_LECUN = nnx.initializers.lecun_normal()
_ZEROS = nnx.initializers.zeros_init()


class Linear(nnx.Module):
    """``x @ kernel + bias`` computed in `dtype` with float32 ``kernel[in, out]``, ``bias[out]``
    (flax's names and initializers), gradients reduced in float32 (module docstring)."""

    def __init__(self, in_features: int, out_features: int, *, dtype=F32, use_bias: bool = True,
                 kernel_init=_LECUN, bias_init=_ZEROS, rngs: nnx.Rngs):  # fmt: skip
        self.dtype = dtype
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), F32))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), F32)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = matmul(x.astype(self.dtype), self.kernel[...])
        return y if self.bias is None else add_param(y, self.bias[...])


class Conv(nnx.Module):
    """A 2-D ``NHWC`` convolution with flax's parameter names (``kernel[kh, kw, in, out]``,
    ``bias[out]``), computed in `dtype`, gradients reduced in float32."""

    def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int], *,
                 strides: Sequence[int] | int = 1, padding: str = "SAME", dtype=F32,
                 use_bias: bool = True, kernel_init=_LECUN, bias_init=_ZEROS,
                 rngs: nnx.Rngs):  # fmt: skip
        kernel_size = (kernel_size,) * 2 if isinstance(kernel_size, int) else tuple(kernel_size)
        self.dtype = dtype
        self.strides = (strides,) * len(kernel_size) if isinstance(strides, int) else tuple(strides)
        self.padding = padding
        shape = (*kernel_size, in_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, F32))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), F32)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv(
            x.astype(self.dtype), self.kernel[...], window_strides=self.strides,
            padding=self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )  # fmt: skip
        return y if self.bias is None else add_param(y, self.bias[...])


def _normalized(x: jax.Array, axes: tuple[int, ...], epsilon: float) -> jax.Array:
    """float32 ``(x - mean) / sqrt(var + eps)`` over `axes` (statistics in float32)."""
    x = x.astype(F32)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) * lax.rsqrt(var + epsilon)


class LayerNorm(nnx.Module):
    """Layer normalization over the last axis with flax's names (``scale``, ``bias``): statistics
    in float32, output in `dtype`, the parameters' gradients reduced in float32."""

    def __init__(self, num_features: int, *, dtype=F32, epsilon: float = 1e-6,
                 use_bias: bool = True, use_scale: bool = True,
                 rngs: nnx.Rngs | None = None):  # fmt: skip
        del rngs  # deterministic initialization (ones, zeros), as flax's
        self.dtype, self.epsilon = dtype, epsilon
        self.scale = nnx.Param(jnp.ones((num_features,), F32)) if use_scale else None
        self.bias = nnx.Param(jnp.zeros((num_features,), F32)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = _normalized(x, (-1,), self.epsilon).astype(self.dtype)
        if self.scale is not None:
            y = mul_param(y, self.scale[...])
        return y if self.bias is None else add_param(y, self.bias[...])


class GroupNorm(nnx.Module):
    """Group normalization of ``NHWC`` features (flax's names ``scale``, ``bias``; statistics in
    float32, output in `dtype`, the parameters' gradients reduced in float32)."""

    def __init__(self, num_features: int, *, num_groups: int = 32, dtype=F32,
                 epsilon: float = 1e-6, rngs: nnx.Rngs | None = None):  # fmt: skip
        del rngs
        if num_features % num_groups:
            raise ValueError(f"GroupNorm: {num_groups} groups do not divide {num_features}")
        self.dtype, self.epsilon, self.num_groups = dtype, epsilon, num_groups
        self.scale = nnx.Param(jnp.ones((num_features,), F32))
        self.bias = nnx.Param(jnp.zeros((num_features,), F32))

    def __call__(self, x: jax.Array) -> jax.Array:
        *lead, c = x.shape
        grouped = x.reshape(*lead, self.num_groups, c // self.num_groups)
        axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
        y = _normalized(grouped, axes, self.epsilon).reshape(x.shape).astype(self.dtype)
        return add_param(mul_param(y, self.scale[...]), self.bias[...])
