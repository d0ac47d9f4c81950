"""Chunk executors: exact numerics of receding horizon and temporal ensembling."""

from __future__ import annotations

import numpy as np
import pytest

from octo_like.inference import RecedingHorizon, TemporalEnsembler, make_executor


def chunk(step: int, horizon: int = 3) -> np.ndarray:
    """A chunk predicted at `step`: row k (for step + k) holds 10 * step + k in both dims."""
    rows = 10.0 * step + np.arange(horizon, dtype=np.float32)
    return np.stack([rows, -rows], axis=1)


def test_receding_horizon_executes_the_first_actions_then_asks_again():
    executor = RecedingHorizon(exec_horizon=2)
    executed, calls = [], 0
    for _ in range(5):
        if executor.needs_chunk():
            executor.set_chunk(chunk(calls))
            calls += 1
        executed.append(executor.next_action()[0])
    # chunks from calls 0, 1, 2; the first two rows of each
    assert executed == [0.0, 1.0, 10.0, 11.0, 20.0]
    assert calls == 3
    executor.reset()
    assert executor.needs_chunk()


def test_receding_horizon_errors():
    executor = RecedingHorizon(exec_horizon=4)
    with pytest.raises(ValueError, match="fewer than exec_horizon=4"):
        executor.set_chunk(chunk(0, horizon=3))
    with pytest.raises(RuntimeError, match="set_chunk"):
        executor.next_action()
    with pytest.raises(ValueError, match=r"float32\[H, A\]"):
        executor.set_chunk(np.zeros(4, np.float32))


def test_temporal_ensemble_averages_all_predictions_for_the_step():
    executor = TemporalEnsembler(action_horizon=3)
    actions = []
    for step in range(4):
        assert executor.needs_chunk()
        executor.set_chunk(chunk(step))
        assert not executor.needs_chunk()
        actions.append(executor.next_action())
    # step 0: [0]; step 1: chunk0 row1 = 1, chunk1 row0 = 10; step 2: 2, 11, 20; step 3 (chunk0
    # has expired): chunk1 row2 = 12, chunk2 row1 = 21, chunk3 row0 = 30.
    expected = [0.0, (1 + 10) / 2, (2 + 11 + 20) / 3, (12 + 21 + 30) / 3]
    np.testing.assert_allclose([a[0] for a in actions], expected, rtol=1e-6)
    np.testing.assert_allclose([a[1] for a in actions], [-e for e in expected], rtol=1e-6)
    assert actions[0].dtype == np.float32 and actions[0].shape == (2,)


@pytest.mark.parametrize("decay", [0.5, -0.5])
def test_temporal_ensemble_weights_are_exp_minus_decay_times_age(decay):
    executor = TemporalEnsembler(action_horizon=3, decay=decay)
    for step in range(3):
        executor.set_chunk(chunk(step))
        if step < 2:
            executor.next_action()
    ages = np.array([2.0, 1.0, 0.0])  # oldest first
    weights = np.exp(-decay * ages) / np.exp(-decay * ages).sum()
    np.testing.assert_allclose(executor.weights(), weights)
    action = executor.next_action()
    np.testing.assert_allclose(action[0], weights @ np.array([2.0, 11.0, 20.0]), rtol=1e-6)
    newest_weighs_more = weights[-1] > weights[0]
    assert newest_weighs_more == (decay > 0)


def test_temporal_ensemble_protocol_and_reset():
    executor = TemporalEnsembler(action_horizon=3)
    with pytest.raises(RuntimeError, match="set_chunk before each next_action"):
        executor.next_action()
    executor.set_chunk(chunk(0))
    executor.set_chunk(chunk(5))  # a second chunk for the same step replaces the first
    assert executor.next_action()[0] == 50.0
    with pytest.raises(ValueError, match="expected action_horizon=3"):
        executor.set_chunk(chunk(1, horizon=4))
    executor.reset()
    executor.set_chunk(chunk(7))
    assert executor.next_action()[0] == 70.0  # nothing from before the reset


def test_make_executor_defaults_and_errors():
    assert make_executor("receding", 4).exec_horizon == 4
    assert make_executor("receding", 4, 2).exec_horizon == 2
    assert isinstance(make_executor("ensemble", 4, decay=0.1), TemporalEnsembler)
    with pytest.raises(ValueError, match="exceeds the model's action_horizon=4"):
        make_executor("receding", 4, 5)
    with pytest.raises(ValueError, match="only for execution='receding'"):
        make_executor("ensemble", 4, 2)
    with pytest.raises(ValueError, match="unknown execution 'recede'"):
        make_executor("recede", 4)
