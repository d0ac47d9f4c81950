"""DDPM head: a residual MLP predicts the noise added to the flattened action chunk.

Training draws one diffusion step and one noise vector per ``(b, w)`` element; sampling runs the
K reverse steps in one `jax.lax.scan` for the last window step only.

Two choices, each with Octo's value beside octo_like's (the Octo presets take Octo's):
- ``time_input``: ``"unit"`` feeds ``t / (K - 1)`` in ``[0, 1]`` (the flow head's scale);
  ``"step"`` feeds the raw step index ``t`` (Octo).
- ``sampler``: ``"posterior"`` samples with the clipped-x0 posterior mean and variance;
  ``"octo"`` with Octo's update (`diffusion.octo_reverse_step`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from octo_like.model import diffusion
from octo_like.model.heads.iterative import IterativeHead

TIME_INPUTS = ("unit", "step")
SAMPLERS = ("posterior", "octo")


class DiffusionActionHead(IterativeHead):
    """Epsilon-prediction DDPM (cosine schedule) conditioned on the mean readout embedding.

    Targets are clipped to ``[-max_action, max_action]`` before noising; in sampling the final
    chunk is clipped to the same range, and so is the per-step ``x0`` estimate ("posterior")
    or the per-step sample (Octo's sampler).
    """

    def __init__(
        self,
        *,
        diffusion_steps: int = 20,
        time_input: str = "unit",
        sampler: str = "posterior",
        **shared: Any,
    ):
        """``shared``: the sizes and network keywords of `IterativeHead` (hidden_dim, ...)."""
        if time_input not in TIME_INPUTS:
            raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.time_input = time_input
        self.sampler = sampler
        super().__init__(
            steps=diffusion_steps,
            steps_name="diffusion_steps",
            # Octo's init over raw steps in [0, K): N(0, 0.2^2) frequencies
            fourier_init_std=0.2 if time_input == "step" else None,
            **shared,
        )
        self.diffusion_steps = diffusion_steps

    def schedule(self) -> diffusion.DiffusionSchedule:
        """The cosine schedule (constants; rebuilt per call so the module holds no arrays)."""
        return diffusion.make_ddpm_schedule(self.diffusion_steps)

    def network_time(self, t: jax.Array) -> jax.Array:
        """``t / (K - 1)`` for ``"unit"``, the raw step for ``"step"`` (Octo's)."""
        if self.time_input == "step":
            return t.astype(jnp.float32)
        return t.astype(jnp.float32) / max(self.diffusion_steps - 1, 1)

    def draw_time(self, rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """A diffusion step ``int32`` in ``[0, K)``."""
        return jax.random.randint(rng, shape, 0, self.diffusion_steps)

    def corrupt(
        self, clean: jax.Array, noise: jax.Array, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """``x_t`` of the forward process; the target is the noise (epsilon prediction)."""
        return diffusion.q_sample(self.schedule(), clean, t, noise), noise

    def _kept_dims(self, embodiment_action_dim: int | None) -> jax.Array | None:
        """bool[H * A] (flattened (h a) order): True on the embodiment's action dims."""
        if embodiment_action_dim is None or embodiment_action_dim >= self.action_dim:
            return None
        dims = jnp.arange(self.action_dim) < embodiment_action_dim
        return jnp.tile(dims, self.action_horizon)

    def denoise(self, readouts: jax.Array, noisy: jax.Array, t: jax.Array) -> jax.Array:
        """The network's noise estimate float32[b, w, H*A] for ``noisy`` float[b, w, H*A] at
        integer steps ``t`` int[b, w] (or a scalar), from readouts float[b, w, n, d]."""
        self.check_readouts(readouts)
        t = jnp.broadcast_to(jnp.asarray(t), noisy.shape[:-1])
        return self.network(noisy, self.condition(readouts), self.network_time(t), train=False)

    def predict_action(
        self,
        readouts: jax.Array,
        *,
        rng: jax.Array,
        sample_shape: tuple[int, ...] = (),
        train: bool = False,
        noise: tuple[jax.Array, jax.Array] | None = None,
        embodiment_action_dim: int | None = None,
    ) -> jax.Array:
        """``float32[*sample_shape, b, H, A]``: one reverse chain per sample, last step only.

        ``embodiment_action_dim`` (sampler "octo"): the robot's dims; the rest (padding to
        ``A``) are reset to noise at every step, as Octo's sampler does.

        ``noise``: ``(x_init float[*sample_shape, b, H*A], step_noise float[K, *sample_shape,
        b, H*A])`` replaces the draws from ``rng`` (step_noise row i for the i-th step run,
        t = K - 1 - i): a chain can then be replayed from noises another program drew.
        """
        condition = self.last_condition(readouts, sample_shape)
        init_rng, chain_rng, dropout_rng = jax.random.split(rng, 3)
        chunk_shape = condition.shape[:-1] + (self.chunk_size,)
        if noise is None:
            x_init, step_noise = jax.random.normal(init_rng, chunk_shape), None
        else:
            x_init, step_noise = noise
            if tuple(x_init.shape) != chunk_shape:
                raise ValueError(f"noise[0] must be float{list(chunk_shape)}, got {x_init.shape}")

        def eps_fn(x_t: jax.Array, t: jax.Array) -> jax.Array:
            step_rng = jax.random.fold_in(dropout_rng, t)
            return self.network(x_t, condition, self.network_time(t), train=train, rng=step_rng)

        octo = self.sampler == "octo"
        x0 = diffusion.ddpm_sample(
            eps_fn,
            self.schedule(),
            x_init,
            chain_rng,
            clip_x0=None if octo else self.max_action,
            step_noise=step_noise,
            octo_max_action=self.max_action if octo else None,
            keep=self._kept_dims(embodiment_action_dim) if octo else None,
        )
        x0 = jnp.clip(x0, -self.max_action, self.max_action)
        return x0.reshape(x0.shape[:-1] + (self.action_horizon, self.action_dim))
