"""Diffusion and flow-matching math against oracles that know the clean signal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from octo_like.model import diffusion

K = 20


@pytest.mark.parametrize("num_steps", [1, 5, 20, 100])
def test_cosine_schedule_invariants(num_steps):
    schedule = diffusion.make_ddpm_schedule(num_steps)
    betas = np.asarray(schedule.betas)
    alpha_bars = np.asarray(schedule.alpha_bars)
    assert betas.shape == (num_steps,) and betas.dtype == np.float32
    assert schedule.num_steps == num_steps
    assert np.all(betas > 0) and np.all(betas < 1)
    np.testing.assert_allclose(np.asarray(schedule.alphas), 1 - betas, atol=1e-6)
    np.testing.assert_allclose(alpha_bars, np.cumprod(1 - betas.astype(np.float64)), rtol=5e-5)
    assert np.all(np.diff(alpha_bars) < 0)
    assert alpha_bars[-1] < 1e-2
    np.testing.assert_allclose(np.asarray(diffusion.cosine_beta_schedule(num_steps)), betas)


def test_cosine_schedule_starts_near_one_and_increases_betas():
    schedule = diffusion.make_ddpm_schedule(K)
    assert 0.98 < float(schedule.alpha_bars[0]) < 1.0
    assert np.all(np.diff(np.asarray(schedule.betas)) > 0)  # cosine: noise added faster later


def test_schedule_rejects_zero_steps():
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.cosine_beta_schedule(0)


def _x0_and_noise(shape=(6, 12), seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.uniform(k1, shape, minval=-1, maxval=1), jax.random.normal(k2, shape)


def test_q_sample_zero_noise_scales_signal_per_example_step():
    schedule = diffusion.make_ddpm_schedule(K)
    x0, _ = _x0_and_noise()
    t = jnp.array([0, 3, 7, 11, 15, 19])
    x_t = diffusion.q_sample(schedule, x0, t, jnp.zeros_like(x0))
    expected = np.sqrt(np.asarray(schedule.alpha_bars)[np.asarray(t)])[:, None] * np.asarray(x0)
    np.testing.assert_allclose(np.asarray(x_t), expected, rtol=1e-6)


def test_q_sample_then_predict_x0_round_trips():
    schedule = diffusion.make_ddpm_schedule(K)
    x0, noise = _x0_and_noise()
    for t in range(K):
        x_t = diffusion.q_sample(schedule, x0, jnp.int32(t), noise)
        x0_hat = diffusion.predict_x0(schedule, x_t, jnp.int32(t), noise)
        # Late steps divide by sqrt(alpha_bar) ~ 0.03: allow the fp32 error that amplifies.
        np.testing.assert_allclose(np.asarray(x0_hat), np.asarray(x0), atol=2e-4 * (t + 1))


def test_reverse_step_with_true_eps_recovers_x0_at_step_zero():
    schedule = diffusion.make_ddpm_schedule(K)
    x0, noise = _x0_and_noise()
    x_t = diffusion.q_sample(schedule, x0, jnp.int32(0), noise)
    step_noise = jax.random.normal(jax.random.key(5), x0.shape)  # variance is 0 at t = 0
    x_prev = diffusion.ddpm_reverse_step(schedule, x_t, jnp.int32(0), noise, step_noise)
    np.testing.assert_allclose(np.asarray(x_prev), np.asarray(x0), atol=1e-5)


@pytest.mark.parametrize("t", [1, 10, 19])
def test_reverse_step_matches_ho_et_al_mean_and_posterior_variance(t):
    """Posterior-through-x0 form equals ``(x_t - beta / sqrt(1 - abar) eps) / sqrt(alpha)``."""
    schedule = diffusion.make_ddpm_schedule(K)
    x0, noise = _x0_and_noise()
    x_t = diffusion.q_sample(schedule, x0, jnp.int32(t), noise)
    z = jax.random.normal(jax.random.key(7), x0.shape)
    x_prev = diffusion.ddpm_reverse_step(schedule, x_t, jnp.int32(t), noise, z)
    b = np.asarray(schedule.betas, np.float64)
    ab = np.cumprod(1 - b)
    mean = (np.asarray(x_t) - b[t] / np.sqrt(1 - ab[t]) * np.asarray(noise)) / np.sqrt(1 - b[t])
    sigma = np.sqrt(b[t] * (1 - ab[t - 1]) / (1 - ab[t]))
    np.testing.assert_allclose(np.asarray(x_prev), mean + sigma * np.asarray(z), atol=2e-4)


def test_full_reverse_chain_with_oracle_eps_returns_x0():
    schedule = diffusion.make_ddpm_schedule(K)
    x0, _ = _x0_and_noise(shape=(5, 8), seed=3)
    calls = []

    def oracle_eps(x_t, t):
        calls.append(t)
        alpha_bar = schedule.alpha_bars[t]
        return (x_t - jnp.sqrt(alpha_bar) * x0) / jnp.sqrt(1 - alpha_bar)

    sample = jax.jit(
        lambda x_init, rng: diffusion.ddpm_sample(oracle_eps, schedule, x_init, rng, clip_x0=5.0)
    )
    x_init = jax.random.normal(jax.random.key(1), x0.shape)
    out = sample(x_init, jax.random.key(2))
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0), atol=1e-4)
    assert len(calls) == 1  # traced once: the K steps run inside one lax.scan


def test_reverse_chain_is_a_function_of_the_rng():
    schedule = diffusion.make_ddpm_schedule(K)
    zero_eps = lambda x_t, t: jnp.zeros_like(x_t)
    x_init = jnp.ones((3, 4))
    a = diffusion.ddpm_sample(zero_eps, schedule, x_init, jax.random.key(0))
    b = diffusion.ddpm_sample(zero_eps, schedule, x_init, jax.random.key(0))
    c = diffusion.ddpm_sample(zero_eps, schedule, x_init, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_clip_x0_bounds_each_step_estimate():
    schedule = diffusion.make_ddpm_schedule(K)
    x_t = jnp.full((2, 3), 50.0)
    out = diffusion.ddpm_reverse_step(
        schedule, x_t, jnp.int32(0), jnp.zeros_like(x_t), jnp.zeros_like(x_t), clip_x0=5.0
    )
    np.testing.assert_allclose(np.asarray(out), 5.0, rtol=1e-5)


def test_flow_interpolate_endpoints_and_velocity():
    data, noise = _x0_and_noise()
    s = jnp.array([0.0, 1.0, 0.5, 0.25, 0.0, 1.0])
    x_s = np.asarray(diffusion.flow_interpolate(data, noise, s))
    d, n = np.asarray(data), np.asarray(noise)
    np.testing.assert_allclose(x_s[0], n[0])
    np.testing.assert_allclose(x_s[1], d[1])
    np.testing.assert_allclose(x_s[2], 0.5 * (d[2] + n[2]), rtol=1e-6)
    np.testing.assert_allclose(x_s[3], 0.75 * n[3] + 0.25 * d[3], rtol=1e-6, atol=1e-7)
    # The velocity target is the derivative of the path in s.
    eps = 1e-2
    s_mid = jnp.full((6,), 0.4)
    finite_diff = (
        diffusion.flow_interpolate(data, noise, s_mid + eps)
        - diffusion.flow_interpolate(data, noise, s_mid)
    ) / eps
    np.testing.assert_allclose(
        np.asarray(finite_diff), np.asarray(diffusion.flow_velocity_target(data, noise)), atol=1e-3
    )


@pytest.mark.parametrize("num_steps", [1, 10])
def test_euler_with_exact_linear_velocity_recovers_data(num_steps):
    data, noise = _x0_and_noise()
    constant = lambda x, s: diffusion.flow_velocity_target(data, noise)
    out = diffusion.euler_integrate(constant, noise, num_steps)
    np.testing.assert_allclose(np.asarray(out), np.asarray(data), atol=1e-5)
    # The field that points every x straight at the data: exact for any step count.
    conditional = lambda x, s: (data - x) / (1.0 - s)
    out = jax.jit(lambda x: diffusion.euler_integrate(conditional, x, num_steps))(noise)
    np.testing.assert_allclose(np.asarray(out), np.asarray(data), atol=1e-5)


def test_euler_evaluates_left_endpoints():
    """dx/ds = s: Euler sums k/K * 1/K over k < K, i.e. (K - 1) / (2K), not the exact 1/2."""
    num_steps = 4
    out = diffusion.euler_integrate(lambda x, s: jnp.full_like(x, s), jnp.zeros(()), num_steps)
    np.testing.assert_allclose(float(out), (num_steps - 1) / (2 * num_steps), rtol=1e-6)
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.euler_integrate(lambda x, s: x, jnp.zeros(()), 0)
