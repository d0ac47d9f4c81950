"""Octo's evaluation wrappers and call forms (octo/utils/gym_wrappers.py, train_callbacks.py) on
a tiny fake env: NormalizeProprio, RHCWrapper, HistoryWrapper(horizon=),
TemporalEnsembleWrapper(pred_horizon, exp_weight) and supply_rng."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from octo_like.inference.gym_wrappers import (
    HistoryWrapper,
    NormalizeProprio,
    RHCWrapper,
    TemporalEnsembleWrapper,
)
from octo_like.inference.rng import supply_rng
from octo_like.model.octo_inputs import StatisticsByDataset
from tests.inference.test_gym_wrappers import A, CountingEnv, chunk

MEAN, STD = np.array([1.0, -2.0], np.float32), np.array([2.0, 4.0], np.float32)


def proprio_statistics(**extra) -> dict:
    return {
        "mean": MEAN.tolist(), "std": STD.tolist(), "min": [-9.0, -9.0], "max": [9.0, 9.0],
        "p01": [-1.0, -6.0], "p99": [3.0, 2.0], **extra,
    }  # fmt: skip


def entry(normalization: str) -> dict:
    statistics = {"action": proprio_statistics(), "proprio": proprio_statistics()}
    return {"statistics": statistics, "normalization": normalization}


def test_normalize_proprio_reads_octos_flat_form_and_a_models_statistics():
    env = NormalizeProprio(CountingEnv(), {"proprio": proprio_statistics()})  # Octo's flat form
    obs, _ = env.reset()
    np.testing.assert_allclose(obs["proprio"], ([0.0, 0.0] - MEAN) / STD)
    obs, *_ = env.step(np.array([5.0, 0.0], np.float32))
    np.testing.assert_allclose(obs["proprio"], ([1.0, 5.0] - MEAN) / STD)
    assert obs["image_primary"].shape == (4, 4, 3)  # the rest passes unchanged
    masked = NormalizeProprio(CountingEnv(), {"proprio": proprio_statistics(mask=[True, False])})
    obs, _ = masked.reset()
    np.testing.assert_allclose(obs["proprio"], [-0.5, 0.0])  # a False dim is left as it is
    # model.dataset_statistics of one dataset: that dataset's own normalization (bounds here).
    bounds = NormalizeProprio(CountingEnv(), StatisticsByDataset(robot=entry("bounds")))
    obs, _ = bounds.reset()
    np.testing.assert_allclose(obs["proprio"], [-0.5, 0.5])  # p01 -> -1, p99 -> 1
    assert bounds.observation_space["proprio"].shape == (2,)


def test_normalize_proprio_without_statistics_refuses_proprio_and_names_the_datasets():
    several = StatisticsByDataset(a=entry("normal"), b=entry("normal"))
    with pytest.raises(ValueError, match=r"several datasets \('a', 'b'\)"):
        NormalizeProprio(CountingEnv(), several).reset()
    with pytest.raises(ValueError, match="no proprio statistics"):
        NormalizeProprio(CountingEnv(), {"action": proprio_statistics()}).reset()
    chosen = NormalizeProprio(CountingEnv(), several["a"])  # one entry: fine
    np.testing.assert_allclose(chosen.reset()[0]["proprio"], -MEAN / STD)


def test_rhc_wrapper_returns_octos_info_lists():
    inner = CountingEnv()
    env = RHCWrapper(HistoryWrapper(inner, horizon=1), exec_horizon=3)
    obs, _ = env.reset()
    assert obs["image_primary"].shape == (1, 4, 4, 3)  # Octo's horizon= keyword
    obs, reward, done, trunc, info = env.step(chunk(10.0, horizon=5))
    np.testing.assert_array_equal(np.stack(inner.actions), chunk(10.0)[:3])
    assert (reward, done, trunc) == (3.0, False, False)
    assert info["rewards"] == [1.0, 1.0, 1.0] and info["t"] == [1, 2, 3]
    assert [o["proprio"][0, 0] for o in info["observations"]] == [1.0, 2.0, 3.0]
    assert info["observations"][-1] is obs
    one = RHCWrapper(CountingEnv(length=1), exec_horizon=1)
    one.reset()
    _, reward, done, _, info = one.step(np.ones(A, np.float32))  # Octo: one action, no chunk
    assert done and reward == 1.0 and len(info["observations"]) == 1


def test_temporal_ensemble_wrapper_takes_octos_arguments():
    """Octo's exp_weight m weighs OLDER predictions by exp(-m i) (i from the oldest)."""
    inner = CountingEnv()
    env = TemporalEnsembleWrapper(HistoryWrapper(inner, 2), pred_horizon=2, exp_weight=1.0)
    env.reset()
    env.step(chunk(0.0, horizon=4))  # rows past pred_horizon are ignored, as in Octo
    env.step(chunk(10.0, horizon=4))
    weights = np.exp(-1.0 * np.arange(2))  # oldest first
    expected = (weights / weights.sum()) @ np.array([1.0, 10.0])
    np.testing.assert_allclose(inner.actions[-1][0], expected, rtol=1e-6)
    assert TemporalEnsembleWrapper(CountingEnv(), 3).action_space.shape == (3, A)  # positional
    with pytest.raises(TypeError, match="not both"):
        TemporalEnsembleWrapper(CountingEnv(), 3, decay=1.0, exp_weight=1.0)


def test_supply_rng_passes_a_fresh_split_key_each_call():
    seen = []

    def f(x, *, rng, scale=1):
        seen.append(jax.random.key_data(rng))
        return x * scale

    policy_fn = supply_rng(f, rng=jax.random.PRNGKey(3))
    assert policy_fn(2, scale=3) == 6
    policy_fn(2)
    carried, first = jax.random.split(jax.random.PRNGKey(3))
    _, second = jax.random.split(carried)
    np.testing.assert_array_equal(seen[0], jax.random.key_data(first))
    np.testing.assert_array_equal(seen[1], jax.random.key_data(second))
    supply_rng(f)(1)  # Octo's default: PRNGKey(0)
    np.testing.assert_array_equal(seen[2], jax.random.split(jax.random.PRNGKey(0))[1])


def test_the_documented_import_lines_import_what_examples_03_uses():
    """docs/octo.md "examples/03 ported": the lines that replace Octo's imports."""
    from tests.documented import fenced_block

    first = "from octo_like.model.octo_model import OctoModel  # was: from octo.model.octo_model import OctoModel"  # noqa: E501
    names: dict = {}
    exec(fenced_block("docs/octo.md", first), names)
    assert {"OctoModel", "HistoryWrapper", "NormalizeProprio", "RHCWrapper", "supply_rng"} <= set(
        names
    )
