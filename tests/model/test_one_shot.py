"""Programs a start runs once (the initializers, the first optimizer state) compile at LLVM
optimization level 1 on a CPU, unless the process set a level itself
(octo_like/model/one_shot.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from octo_like.model import one_shot


def draws(key):
    return jax.random.truncated_normal(key, -2.0, 2.0, (64, 33)) * 0.02


def test_without_a_level_of_its_own_a_process_compiles_them_at_level_1(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert one_shot.one_shot_options() == {"xla_backend_optimization_level": 1}
    key = jax.random.key(0)
    reference = jax.jit(draws)(key)  # this process's level (the tests': 0)
    np.testing.assert_allclose(
        one_shot.run_once(jax.jit(draws), key), reference, rtol=1e-6, atol=1e-7
    )
    # The option reaches XLA: a level it cannot read is refused by the compiler.
    monkeypatch.setattr(one_shot, "ONE_SHOT_LEVEL", "high")
    with pytest.raises(Exception, match="xla_backend_optimization_level"):
        one_shot.run_once(jax.jit(draws), key)


def test_a_level_the_process_set_stands(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                       "--xla_backend_optimization_level=0")  # fmt: skip
    assert one_shot.one_shot_options() is None
    key = jax.random.key(0)
    np.testing.assert_array_equal(one_shot.run_once(jax.jit(draws), key), jax.jit(draws)(key))
