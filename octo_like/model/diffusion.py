"""Diffusion and flow-matching math as pure functions, kept apart from any network.

Heads pass in their denoiser (or velocity network) as a plain function, so the schedules,
noising, reverse steps and integrators can be tested against oracles that know the answer.

Conventions:

- DDPM steps are integers ``t`` in ``[0, K)``; ``t = 0`` is the least noisy level and
  ``alpha_bar[t]`` is the signal fraction after ``t + 1`` noising steps (so ``alpha_bar[0] < 1``).
- Flow matching uses a continuous time ``s`` in ``[0, 1]`` running from pure noise (``s = 0``)
  to data (``s = 1``): ``x_s = (1 - s) * noise + s * data`` with velocity ``data - noise``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EpsilonFn = Callable[[jax.Array, jax.Array], jax.Array]
"""``(x_t float[..., D], t int32[]) -> eps float[..., D]``: the denoiser at one step."""

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]
"""``(x_s float[..., D], s float32[]) -> velocity float[..., D]``."""


class DiffusionSchedule(NamedTuple):
    """Per-step DDPM coefficients, all ``float32[K]``."""

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]


def _cosine_betas(num_steps: int, s: float, max_beta: float) -> np.ndarray:
    """float64 on the host: a constant schedule, and alpha_bar near 1 loses digits in fp32."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t = np.arange(num_steps + 1, dtype=np.float64)
    f = np.cos((t / num_steps + s) / (1 + s) * (math.pi / 2)) ** 2
    alpha_bar = f / f[0]
    return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)


def cosine_beta_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> jax.Array:
    """Betas of the cosine schedule (Nichol & Dhariwal 2021), ``float32[num_steps]``.

    ``alpha_bar(t) = f(t) / f(0)`` with ``f(t) = cos^2(((t / K) + s) / (1 + s) * pi / 2)``;
    betas are clipped below ``max_beta`` so the last step keeps a sliver of signal and
    the reverse step never divides by zero.
    """
    return jnp.asarray(_cosine_betas(num_steps, s, max_beta), dtype=jnp.float32)


def make_ddpm_schedule(num_steps: int) -> DiffusionSchedule:
    """The cosine DDPM schedule with its derived ``alphas`` and cumulative ``alpha_bars``."""
    betas = _cosine_betas(num_steps, s=0.008, max_beta=0.999)
    alphas = 1.0 - betas
    return DiffusionSchedule(
        betas=jnp.asarray(betas, jnp.float32),
        alphas=jnp.asarray(alphas, jnp.float32),
        alpha_bars=jnp.asarray(np.cumprod(alphas), jnp.float32),
    )


def _at(coefficients: jax.Array, t: jax.Array, like: jax.Array) -> jax.Array:
    """``coefficients[t]`` shaped to broadcast against ``like`` (``t`` indexes its leading dims)."""
    values = coefficients[t]
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def q_sample(
    schedule: DiffusionSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
    """Forward noising ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise``.

    ``x0, noise``: ``float[*lead, D]``; ``t``: ``int[*lead]`` (or a scalar) step per example.
    """
    alpha_bar = _at(schedule.alpha_bars, t, x0)
    return jnp.sqrt(alpha_bar) * x0 + jnp.sqrt(1.0 - alpha_bar) * noise


def predict_x0(
    schedule: DiffusionSchedule, x_t: jax.Array, t: jax.Array, eps: jax.Array
) -> jax.Array:
    """Invert `q_sample` for ``x0`` given a noise estimate."""
    alpha_bar = _at(schedule.alpha_bars, t, x_t)
    return (x_t - jnp.sqrt(1.0 - alpha_bar) * eps) / jnp.sqrt(alpha_bar)


def ddpm_reverse_step(
    schedule: DiffusionSchedule,
    x_t: jax.Array,
    t: jax.Array,
    eps: jax.Array,
    noise: jax.Array,
    *,
    clip_x0: float | None = None,
) -> jax.Array:
    """One ancestral step ``x_t -> x_{t-1}`` through the posterior ``q(x_{t-1} | x_t, x0_hat)``.

    ``x0_hat`` comes from ``eps`` (optionally clipped to ``[-clip_x0, clip_x0]``, which keeps
    early, poor estimates from throwing the chain out of range). The posterior variance is
    ``beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)``, zero at ``t = 0``, so the last step
    returns ``x0_hat`` itself. ``t``: a scalar or ``int[*lead]``.
    """
    x0_hat = predict_x0(schedule, x_t, t, eps)
    if clip_x0 is not None:
        x0_hat = jnp.clip(x0_hat, -clip_x0, clip_x0)
    alpha_bar = _at(schedule.alpha_bars, t, x_t)
    alpha_bar_prev = _at(
        jnp.concatenate([jnp.ones((1,), schedule.alpha_bars.dtype), schedule.alpha_bars[:-1]]),
        t,
        x_t,
    )
    beta = _at(schedule.betas, t, x_t)
    alpha = _at(schedule.alphas, t, x_t)
    coef_x0 = jnp.sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar)
    coef_xt = jnp.sqrt(alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    mean = coef_x0 * x0_hat + coef_xt * x_t
    variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    return mean + jnp.sqrt(variance) * noise


def octo_reverse_step(
    schedule: DiffusionSchedule,
    x_t: jax.Array,
    t: jax.Array,
    eps: jax.Array,
    noise: jax.Array,
    *,
    max_action: float,
) -> jax.Array:
    """Octo's reverse step: ``x <- (x - (1 - a) / sqrt(1 - abar) * eps) / sqrt(a)``, plus
    ``sqrt(beta) * noise`` except at ``t = 0``, clipped to ``[-max_action, max_action]``.

    The mean equals the posterior mean of `ddpm_reverse_step` without its x0 clip; the variance
    is ``beta`` rather than the posterior's. ``t``: a scalar step.
    """
    alpha, alpha_bar = schedule.alphas[t], schedule.alpha_bars[t]
    x = (x_t - (1.0 - alpha) / jnp.sqrt(1.0 - alpha_bar) * eps) / jnp.sqrt(alpha)
    x = x + (t > 0).astype(x.dtype) * jnp.sqrt(schedule.betas[t]) * noise
    return jnp.clip(x, -max_action, max_action)


def ddpm_sample(
    eps_fn: EpsilonFn,
    schedule: DiffusionSchedule,
    x_init: jax.Array,
    rng: jax.Array | None,
    *,
    clip_x0: float | None = None,
    step_noise: jax.Array | None = None,
    octo_max_action: float | None = None,
    keep: jax.Array | None = None,
) -> jax.Array:
    """Run the K reverse steps from ``x_init`` (pure noise) inside one `jax.lax.scan`.

    Step ``t`` draws its noise from ``fold_in(rng, t)``, so the chain is a function of ``rng``
    alone; or ``step_noise`` float[K, *x_init.shape] gives it, row ``i`` for the i-th step
    run (``t = K - 1 - i``). ``octo_max_action`` set: Octo's update (`octo_reverse_step`),
    else the clipped-x0 posterior (`ddpm_reverse_step`). ``keep`` bool[D]: entries False (an
    embodiment's unused action dims) are reset after every step to ``sqrt(1 - alpha_bar_t)``
    times that step's noise, what training showed for padding (zeros, noised); None keeps all.
    Returns the estimate of ``x0``, shaped like ``x_init``.
    """
    steps = jnp.arange(schedule.num_steps - 1, -1, -1, dtype=jnp.int32)
    if step_noise is None:
        if rng is None:
            raise ValueError("ddpm_sample needs rng or step_noise")
        step_noise = jax.vmap(
            lambda t: jax.random.normal(jax.random.fold_in(rng, t), x_init.shape, x_init.dtype)
        )(steps)
    elif step_noise.shape != (schedule.num_steps, *x_init.shape):
        raise ValueError(
            f"step_noise must be float[{schedule.num_steps}, {', '.join(map(str, x_init.shape))}]"
            f", got {step_noise.shape}"
        )

    def step(x_t: jax.Array, t_and_noise) -> tuple[jax.Array, None]:
        t, noise = t_and_noise
        eps = eps_fn(x_t, t)
        if octo_max_action is not None:
            x = octo_reverse_step(schedule, x_t, t, eps, noise, max_action=octo_max_action)
        else:
            x = ddpm_reverse_step(schedule, x_t, t, eps, noise, clip_x0=clip_x0)
        if keep is not None:
            x = jnp.where(keep, x, jnp.sqrt(1.0 - schedule.alpha_bars[t]) * noise)
        return x, None

    x0, _ = jax.lax.scan(step, x_init, (steps, step_noise))
    return x0


def flow_interpolate(data: jax.Array, noise: jax.Array, s: jax.Array) -> jax.Array:
    """The rectified-flow path ``x_s = (1 - s) noise + s data``; ``s`` broadcasts on the left."""
    s = s.reshape(s.shape + (1,) * (data.ndim - s.ndim))
    return (1.0 - s) * noise + s * data


def flow_velocity_target(data: jax.Array, noise: jax.Array) -> jax.Array:
    """``d x_s / d s`` of `flow_interpolate`: constant along each straight path."""
    return data - noise


def euler_integrate(velocity_fn: VelocityFn, x_init: jax.Array, num_steps: int) -> jax.Array:
    """Integrate ``dx/ds = v(x, s)`` from ``s = 0`` (noise) to ``s = 1`` in equal Euler steps."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = 1.0 / num_steps

    def step(x: jax.Array, k: jax.Array) -> tuple[jax.Array, None]:
        s = k.astype(jnp.float32) * dt
        return x + dt * velocity_fn(x, s), None

    x1, _ = jax.lax.scan(step, x_init, jnp.arange(num_steps, dtype=jnp.int32))
    return x1
