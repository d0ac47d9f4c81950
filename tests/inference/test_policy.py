"""Policy on a tiny checkpoint: warm-up compilation, chunk shapes in robot units, proprio and
image preprocessing, fresh noise per call, the stateful loop and its executors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from octo_like.inference import Policy
from octo_like.inference.observations import prepare_observations, resize_images
from tests.inference.conftest import (
    ACTION_MEAN,
    ACTION_STD,
    HORIZON,
    MODEL_P,
    PRIMARY,
    PROPRIO_MEAN,
    PROPRIO_STD,
    ROBOT_A,
    ROBOT_P,
    WINDOW,
    dataset_entry,
)


def observation(rng: np.random.Generator, batch: int, size=(PRIMARY, PRIMARY)) -> dict:
    return {
        "image_primary": rng.integers(0, 255, (batch, WINDOW, *size, 3), dtype=np.uint8),
        "image_wrist": rng.integers(0, 255, (batch, WINDOW, 16, 16, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(batch, WINDOW, ROBOT_P)).astype(np.float32),
    }


def frame(rng: np.random.Generator) -> dict:
    return {
        "image_primary": rng.integers(0, 255, (PRIMARY, PRIMARY, 3), dtype=np.uint8),
        "image_wrist": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
        "proprio": rng.normal(size=ROBOT_P).astype(np.float32),
    }


def test_warm_up_compiles_at_load_so_the_first_call_does_not(policy):
    """Meaningful when it runs first (it does, in file order): `policy` has only warmed up."""
    assert policy.warmup_ms > 0
    calls = policy.latency_ms()["count"]
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        chunks = policy.predict_chunks(observation(np.random.default_rng(0), 1), "open")
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []  # the warm-up compiled everything the batch-1 call needs
    assert chunks.shape == (1, HORIZON, ROBOT_A)
    assert policy.latency_ms()["count"] == calls + 1  # the warm-up is not counted


def test_chunks_are_in_robot_units(policy):
    rng = np.random.default_rng(1)
    obs = observation(rng, 2)
    tasks = policy.create_tasks(["open the drawer", ""])
    fresh = Policy(policy.model, seed=11, warmup=False)  # shares the compiled model
    actions = fresh.predict_chunks(obs, tasks)
    assert actions.shape == (2, HORIZON, ROBOT_A) and actions.dtype == np.float32
    # the normalized prediction of the same call (documented noise: fold_in(key(seed), 0))
    network_obs = prepare_observations(
        obs,
        config=policy.config,
        input_spec=policy.model.input_spec,
        proprio_statistics=fresh._proprio_stats,
        normalization="normal",
    )
    raw = policy.model.sample_actions(
        network_obs, tasks, rng=jax.random.fold_in(jax.random.key(11), 0)
    )
    assert raw.shape[-1] == ROBOT_A + 1  # the model's padded action dim is dropped
    np.testing.assert_allclose(
        actions[..., :6], raw[..., :6] * ACTION_STD + ACTION_MEAN, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(actions[..., 6], raw[..., 6])  # gripper: unnormalized


def test_fresh_noise_per_call_reproducible_by_seed(policy):
    obs = observation(np.random.default_rng(2), 1)
    a = Policy(policy.model, seed=5, warmup=False)
    b = Policy(policy.model, seed=5, warmup=False)
    first, second = a.predict_chunks(obs, "push"), a.predict_chunks(obs, "push")
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, b.predict_chunks(obs, "push"))
    np.testing.assert_array_equal(second, b.predict_chunks(obs, "push"))


def test_proprio_is_normalized_padded_and_masked(policy):
    obs = observation(np.random.default_rng(3), 2)
    out = prepare_observations(
        obs,
        config=policy.config,
        input_spec=policy.model.input_spec,
        proprio_statistics=policy._proprio_stats,
        normalization="normal",
    )
    assert out["proprio"].shape == (2, WINDOW, MODEL_P)
    expected = (obs["proprio"] - PROPRIO_MEAN) / PROPRIO_STD
    np.testing.assert_allclose(out["proprio"][..., :ROBOT_P], expected, rtol=1e-6)
    assert (out["proprio"][..., ROBOT_P:] == 0).all()
    assert out["proprio_pad_mask"][0, 0].tolist() == [True] * ROBOT_P + [False]
    assert out["timestep_pad_mask"].all() and out["pad_mask_dict"]["proprio"].all()


def test_images_of_another_size_are_resized_like_the_data_pipeline(policy):
    from octo_like.data import image_ops

    rng = np.random.default_rng(4)
    for size in [(48, 64), (20, 24)]:  # shrink (antialiased) and enlarge
        images = rng.integers(0, 255, (3, *size, 3), dtype=np.uint8)
        ours = resize_images(images, (PRIMARY, PRIMARY)).astype(int)
        reference = image_ops.resize(images, (PRIMARY, PRIMARY)).numpy().astype(int)
        assert ours.shape == (3, PRIMARY, PRIMARY, 3)
        assert np.abs(ours - reference).max() <= 1
    same = rng.integers(0, 255, (2, PRIMARY, PRIMARY, 3), dtype=np.uint8)
    assert resize_images(same, (PRIMARY, PRIMARY)) is same
    chunks = policy.predict_chunks(observation(rng, 2, size=(48, 64)), "open")
    assert chunks.shape == (2, HORIZON, ROBOT_A) and np.isfinite(chunks).all()


def test_missing_masks_and_cameras_are_filled_unknown_keys_rejected(policy):
    obs = observation(np.random.default_rng(5), 2)
    del obs["image_wrist"]
    obs["pad_mask_dict"] = {"image_primary": np.array([[False, True], [True, True]])}
    out = prepare_observations(
        obs,
        config=policy.config,
        input_spec=policy.model.input_spec,
        proprio_statistics=None,
        normalization="none",
    )
    assert not out["pad_mask_dict"]["image_wrist"].any() and not out["image_wrist"].any()
    assert out["pad_mask_dict"]["image_primary"].tolist() == [[False, True], [True, True]]
    assert out["pad_mask_dict"]["proprio"].all()
    with pytest.raises(ValueError, match="unknown observation key 'image_primay'"):
        policy.predict_chunks({**obs, "image_primay": obs["image_primary"]}, "x")
    with pytest.raises(ValueError, match="window 1 .* the model's window is 2"):
        policy.predict_chunks({k: obs[k][:, :1] for k in ("image_primary", "proprio")}, "x")
    with pytest.raises(ValueError, match="reads 'proprio'"):
        policy.predict_chunks({"image_primary": obs["image_primary"]}, "x")
    with pytest.raises(ValueError, match="proprio statistics have 5"):
        policy.predict_chunks({**obs, "proprio": np.zeros((2, WINDOW, 3), np.float32)}, "x")
    with pytest.raises(ValueError, match="2 instructions for a batch of 1"):
        policy.predict_chunks(
            {k: v[:1] for k, v in obs.items() if k != "pad_mask_dict"}, ["a", "b"]
        )


def test_step_loop_with_receding_horizon_calls_the_model_every_exec_horizon(policy):
    rng = np.random.default_rng(6)
    before = policy.latency_ms()["count"]
    policy.reset(instruction="open the drawer")
    actions = [policy.step(frame(rng)) for _ in range(5)]
    assert all(a.shape == (ROBOT_A,) and a.dtype == np.float32 for a in actions)
    assert policy.latency_ms()["count"] - before == 3  # steps 0, 2, 4 (exec_horizon 2)
    summary = policy.latency_ms()
    assert set(summary) == {"count", "mean", "p50", "p95", "max"} and summary["p50"] > 0


def test_sessions_with_ensembling_and_goals_are_independent(policy):
    rng = np.random.default_rng(7)
    ensemble = Policy(policy.model, execution="ensemble", ensemble_decay=0.1, warmup=False)
    session = ensemble.new_session()
    with pytest.raises(RuntimeError, match="reset"):
        session.step(frame(rng))
    session.reset(goal={"primary": rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)})
    assert session.tasks["pad_mask_dict"]["image_primary"].tolist() == [True]
    assert session.tasks["pad_mask_dict"]["language_instruction"].tolist() == [False]
    for _ in range(3):
        assert session.step(frame(rng)).shape == (ROBOT_A,)
    assert ensemble.latency_ms()["count"] == 3  # one chunk per step
    assert len(session.executor._chunks) == 3
    with pytest.raises(ValueError, match="goal camera 'wrist'"):
        session.reset(goal={"wrist": np.zeros((16, 16, 3), np.uint8)})


def test_metadata_describes_inputs_outputs_and_execution(policy, tiny_checkpoint):
    meta = policy.metadata()
    assert meta["cameras"] == {"primary": [PRIMARY, PRIMARY], "wrist": [16, 16]}
    assert meta["goal_cameras"] == {"primary": [PRIMARY, PRIMARY]}
    assert (meta["proprio_dim"], meta["action_dim"]) == (ROBOT_P, ROBOT_A)
    assert (meta["window"], meta["action_horizon"]) == (WINDOW, HORIZON)
    assert meta["datasets"] == ["fake_robot"] and meta["dataset_name"] == "fake_robot"
    assert meta["execution"] == {"mode": "receding", "exec_horizon": 2, "ensemble_decay": 0.0}
    assert meta["step"] == 3 and meta["checkpoint"] == tiny_checkpoint
    assert not meta["actions_normalized"]


def test_several_datasets_need_a_dataset_name(policy):
    model = policy.model
    original = model.dataset_statistics
    try:
        model.dataset_statistics = {"a": dataset_entry(), "b": dataset_entry()}
        with pytest.raises(ValueError, match="several datasets .*a, b.*dataset_name"):
            Policy(model, warmup=False)
        with pytest.raises(ValueError, match="'c' is not in the checkpoint's statistics"):
            Policy(model, dataset_name="c", warmup=False)
        assert Policy(model, dataset_name="b", warmup=False).metadata()["dataset_name"] == "b"
    finally:
        model.dataset_statistics = original
    with pytest.raises(ValueError, match="unknown execution"):
        Policy(model, execution="chunked", warmup=False)
