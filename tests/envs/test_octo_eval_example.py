"""Octo's evaluation examples against a model fine-tuned here, with only their imports changed.

examples/03_eval_finetuned.py's call sequence (NormalizeProprio -> HistoryWrapper -> RHCWrapper,
supply_rng over sample_actions with the flat ``dataset_statistics["action"]``, ``create_tasks``
of one str) runs for two chunks in this project's MetaWorld, simulated in a spawned worker that
never imports TensorFlow (`octo_like.envs.worker`); examples/04_eval_finetuned_on_robot.py's
policy call forms that need no robot (HistoryWrapper + TemporalEnsembleWrapper, texts=[text],
goals=) run beside it. The model: the tiny pretrained checkpoint of
tests/training/test_finetune_inputs.py fine-tuned for 2 steps on a synthetic dataset with
MetaWorld's keys (this checks call forms, not success).
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import jax
import numpy as np
import pytest

import finetune
from configs import finetune as finetune_configs
from octo_like.envs.tasks import get_task
from octo_like.envs.worker import EnvPool
from octo_like.inference.gym_wrappers import (  # examples/03, 04: octo.utils.gym_wrappers
    HistoryWrapper,
    NormalizeProprio,
    RHCWrapper,
    TemporalEnsembleWrapper,
)
from octo_like.inference.rng import supply_rng  # examples/03, 04: octo.utils.train_callbacks
from octo_like.model.octo_model import OctoModel  # examples/03, 04: octo.model.octo_model
from tests import xla_cache
from tests.training.test_finetune_inputs import pretrained  # noqa: F401  (a fixture)

DATASET = "sim_reach"
IMAGE_SIZE = 32  # the pretrained checkpoint's primary camera
TASK = "reach"


class MetaWorldInWorker(gym.Env):
    """This project's MetaWorld task (default variant: ``image_primary`` uint8[s, s, 3],
    ``proprio`` float32[4], 4-dim actions in [-1, 1]) simulated in an `EnvPool` worker, with the
    ``get_task()`` Octo's examples/03 asks an environment for."""

    def __init__(self, pool: EnvPool, task: str, max_episode_steps: int = 50):
        self.pool, self.task = pool, task
        pool.call("make", [dict(task=task, variant="default", image_size=IMAGE_SIZE,
                                max_episode_steps=max_episode_steps)])  # fmt: skip
        self.observation_space = gym.spaces.Dict({
            "image_primary": gym.spaces.Box(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        })  # fmt: skip
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        (result,) = self.pool.call("reset", [dict(seed=0 if seed is None else seed)])
        return result["obs"], result["info"]

    def step(self, action):
        (result,) = self.pool.call("step", [dict(action=np.asarray(action, np.float32))])
        return tuple(result[k] for k in ("obs", "reward", "terminated", "truncated", "info"))

    def get_task(self) -> dict:
        return {"language_instruction": get_task(self.task).instructions[0]}


def write_sim_like_dataset(data_dir: str) -> str:
    """MetaWorld's keys: a 32x32 camera, a 4-dim state and 4-dim actions (values synthetic)."""
    from octo_like.data.rlds_writer import RldsSchema, image, tensor, text
    from octo_like.data.synthetic import write_rlds_dataset

    schema = RldsSchema(
        observation={"image": image(IMAGE_SIZE, IMAGE_SIZE), "state": tensor((4,))},
        step={"action": tensor((4,)), "language_instruction": text()},
    )
    return write_rlds_dataset(data_dir, DATASET, schema, episodes={"train": 4}, episode_length=8)


@pytest.fixture(scope="module")
def finetuned(pretrained, tmp_path_factory) -> str:  # noqa: F811
    """The pretrained tiny checkpoint fine-tuned (full, multimodal) for 2 steps on one
    dataset, with a new proprio tokenizer and a 4-dim action head."""
    root = tmp_path_factory.mktemp("octo_eval_example")
    config = finetune_configs.get_config("full,multimodal")
    config.pretrained_path = pretrained
    config.dataset.name = DATASET
    config.dataset.location = write_sim_like_dataset(str(root / "data"))
    config.data.extra_specs = {
        DATASET: dict(image_keys=dict(primary="image"), proprio_key="state",
                      action_encoding="custom", standardize="identity")
    }  # fmt: skip
    config.model.proprio = dict(mode="linear", num_features=16)
    config.model.action_dim = 4
    config.model.goal_image_cameras = ("primary",)  # goal images for multimodal
    config.data.batch_size = 8  # the tests run on 8 fake CPU devices
    config.data.shuffle_buffer = 16
    config.data.statistics_cache_dir = str(root / "stats")
    config.num_steps = 2
    config.log_every = 1
    config.val_split = ""
    config.eval_action_samples = 0
    config.checkpoint.save_every = 2
    config.optimizer.warmup_steps = 1
    config.tensorboard = False
    config.compilation_cache = xla_cache.directory()
    finetune.main(config, str(root / "run"))
    return str(root / "run" / "checkpoints")


@pytest.mark.slow  # ~25 s: 18 of them fine-tuning
def test_examples_03_and_04_run_against_a_model_finetuned_here(finetuned):
    with EnvPool(1) as pool:
        # ---- examples/03_eval_finetuned.py, main(), with its 400-step rollout cut to 2 chunks
        model = OctoModel.load_pretrained(finetuned)
        env = MetaWorldInWorker(pool, TASK)
        env = NormalizeProprio(env, model.dataset_statistics)
        env = HistoryWrapper(env, horizon=1)
        env = RHCWrapper(env, exec_horizon=model.config.action_horizon)  # 03: 50, its chunk
        policy_fn = supply_rng(
            partial(
                model.sample_actions,
                unnormalization_statistics=model.dataset_statistics["action"],
            ),
        )
        obs, info = env.reset()
        language_instruction = env.get_task()["language_instruction"]
        task = model.create_tasks(texts=language_instruction)
        images = [obs["image_primary"][0]]
        episode_return = 0.0
        while len(images) < 1 + 2 * model.config.action_horizon:  # 03: 400
            # jax.tree_map in Octo's day: removed from JAX since (0.6), jax.tree.map is it
            actions = policy_fn(jax.tree.map(lambda x: x[None], obs), task)
            actions = actions[0]
            obs, reward, done, trunc, info = env.step(actions)
            images.extend([o["image_primary"][0] for o in info["observations"]])
            episode_return += reward
            if done or trunc:
                break
        # ---- what 03 relies on
        horizon = model.config.action_horizon
        assert len(images) == 1 + 2 * horizon and images[-1].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert actions.shape == (horizon, 4)  # robot units: the statistics' 4 dims
        assert len(info["rewards"]) == horizon and np.isfinite(episode_return)
        assert task["language_tokens"].shape[0] == 1
        normalizer = env.env.env  # NormalizeProprio: the dataset's statistics and kind
        entry = model.dataset_statistics[DATASET]
        np.testing.assert_array_equal(normalizer.statistics.mean, entry["proprio"]["mean"])
        assert normalizer.normalization == entry["normalization"] == "normal"

        # ---- examples/04_eval_finetuned_on_robot.py's policy forms (no robot needed)
        raw = MetaWorldInWorker(pool, TASK)
        env = HistoryWrapper(raw, 2)  # FLAGS.window_size
        env = TemporalEnsembleWrapper(env, horizon)  # FLAGS.action_horizon

        def sample_actions(pretrained_model: OctoModel, observations, tasks, rng):
            observations = jax.tree.map(lambda x: x[None], observations)
            actions = pretrained_model.sample_actions(
                observations,
                tasks,
                rng=rng,
                unnormalization_statistics=pretrained_model.dataset_statistics[DATASET]["action"],
            )
            return actions[0]

        # 04 also binds argmax=FLAGS.deterministic, temperature=FLAGS.temperature: flags it never
        # defines, for a helper that takes neither (a TypeError in Octo too); left out
        policy_fn = supply_rng(partial(sample_actions, model))
        goal_obs, _ = raw.reset(seed=1)
        goal = jax.tree.map(lambda x: x[None], goal_obs)
        for task in (model.create_tasks(goals=goal), model.create_tasks(texts=["reach the goal"])):
            obs, _ = env.reset()
            for _ in range(2):
                action = np.array(policy_fn(obs, task), dtype=np.float64)
                assert action.shape == (horizon, 4)
                obs, _, _, truncated, info = env.step(action)
            assert info["executed_action"].shape == (4,) and obs["image_primary"].shape[0] == 2
