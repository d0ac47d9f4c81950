"""`MetaWorldEnv`: one MetaWorld task as a gymnasium env in octo_like's observation layout.

Observations are ``{"image_<camera>": uint8[s, s, 3], ..., "proprio": float32[4]}`` for the
variant's cameras (``proprio`` = end-effector xyz in metres + gripper opening in [0, 1]), the same
keys a collected dataset stores and a policy consumes (the policy side adds the history window and
``timestep_pad_mask``). Actions are in the variant's units (`variants.EmbodimentVariant`).

Each `reset(seed=...)` draws the object and goal positions from that seed, so episode ``i`` of an
evaluation is the same scene for every policy. An episode terminates on success
(``info["success"]``) and is truncated after `max_episode_steps`.

Import this only in processes that never import TensorFlow (see `octo_like.envs`).
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from octo_like.envs.rendering import configure_gl, disable_shadows, fast_render_settings
from octo_like.envs.tasks import get_task
from octo_like.envs.variants import (
    PROPRIO_DIM,
    EmbodimentVariant,
    get_variant,
    look_at_rotation,
)

DEFAULT_MAX_EPISODE_STEPS = 200  # experts need 30-110 steps on the default tasks
# Room past max_episode_steps for a demonstration's expert steps after success
# (`demos.CollectionConfig.steps_after_success` is bounded by it).
MAX_STEPS_AFTER_SUCCESS = 100


class MetaWorldEnv(gym.Env):
    """A MetaWorld task seen and driven through an embodiment variant."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str,
        variant: str | EmbodimentVariant = "default",
        *,
        image_size: int | None = None,
        max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS,
        expert_noise: float = 0.0,
        gl_backend: str | None = None,
    ):
        configure_gl(gl_backend)
        import metaworld.policies
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self.task = get_task(task)
        self.variant = get_variant(variant) if isinstance(variant, str) else variant
        self.image_size = int(image_size or self.variant.image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.expert_noise = float(expert_noise)
        self._env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[self.task.env_name](seed=0)
        # Draw a fresh, seeded scene at every reset (the goal-observable class freezes one).
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        # MetaWorld raises past max_path_length; leave room for a demonstration's steps after
        # success (and the reset's own step).
        self._env.max_path_length = max(
            self._env.max_path_length, self.max_episode_steps + MAX_STEPS_AFTER_SUCCESS + 1
        )
        self._expert = getattr(metaworld.policies, self.task.expert)()
        fast_render_settings(self._env.model)
        stage_scene(self._env.model, self.variant)
        self._renderer = mujoco.Renderer(self._env.model, self.image_size, self.image_size)
        self._forward = mujoco.mj_forward
        disable_shadows(self._renderer)
        self._rng = np.random.default_rng(0)
        self._raw_obs: np.ndarray | None = None
        self._steps = 0
        size = (self.image_size, self.image_size, 3)
        spaces = {
            key: gym.spaces.Box(0, 255, size, np.uint8)
            for key in self.variant.observation_keys.values()
        }
        spaces["proprio"] = gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        low = self.variant.from_env_action(-np.ones(4))
        high = self.variant.from_env_action(np.ones(4))
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        seed = int(self.np_random.integers(2**31)) if seed is None else int(seed)
        self._env.seed(seed)
        self._rng = np.random.default_rng(seed)
        self._raw_obs, _ = self._env.reset()
        # MetaWorld moves the goal site after its last forward pass, so without this the first
        # frame draws the goal marker where an earlier draw put it (the next step moves it).
        self._forward(self._env.model, self._env.data)
        self._steps = 0
        return self._observation(), {"success": False, "instruction": self.task.instructions[0]}

    def step(self, action: np.ndarray):
        if self._raw_obs is None:
            raise RuntimeError("call reset() before step()")
        with warnings.catch_warnings():  # MetaWorld warns about clipping large expert gains
            warnings.simplefilter("ignore")
            raw, reward, _, _, info = self._env.step(self.variant.to_env_action(action))
        self._raw_obs = raw
        self._steps += 1
        success = bool(info.get("success", False))
        truncated = not success and self._steps >= self.max_episode_steps
        step_info = {"success": success}
        if "obj_to_target" in info:  # metres from the task's object (reach: the hand) to its goal
            step_info["target_distance"] = float(info["obj_to_target"])
        return self._observation(), float(reward), success, truncated, step_info

    def render(self) -> np.ndarray:
        """uint8[s, s, 3] of the primary camera."""
        return self._render(self.variant.cameras["primary"])

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()

    # ------------------------------------------------------------------ experts
    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state, in the variant's units, with
        Gaussian noise of std `expert_noise` (MetaWorld units) on the xyz part."""
        return self.expert_actions()[1]

    def expert_actions(self, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(noise-free, noisy) expert actions for the current state, in the variant's units; one
        noise draw, so a rollout that executes the noisy one is the same as `expert_action`'s.

        `gain` scales the expert's xyz command before clipping to [-1, 1]: moves that saturate
        stay as they are, the small proportional corrections near a target grow by `gain`."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clean = np.asarray(self._expert.get_action(self._raw_obs), np.float64)
        clean[:3] *= gain
        noisy = clean.copy()
        if self.expert_noise > 0:
            noisy[:3] += self._rng.normal(0.0, self.expert_noise, 3)
        return tuple(self.variant.from_env_action(np.clip(a, -1.0, 1.0)) for a in (clean, noisy))

    # ------------------------------------------------------------------ internals
    def _render(self, camera: str) -> np.ndarray:
        self._renderer.update_scene(self._env.data, camera=camera)
        # MuJoCo's off-screen buffer is bottom-up.
        return np.ascontiguousarray(self._renderer.render()[::-1])

    def _observation(self) -> dict[str, Any]:
        obs = {
            key: self._render(self.variant.cameras[camera])
            for camera, key in self.variant.observation_keys.items()
        }
        raw = self._raw_obs
        obs["proprio"] = np.array([*raw[:3], raw[3]], np.float32)
        return obs


def stage_scene(model, variant: EmbodimentVariant) -> None:
    """Applies what `variant` changes in how MetaWorld's scene is seen (before any rendering):
    fields of view, camera poses and the colour of a robot-red goal marker."""
    import mujoco

    for camera, degrees in variant.field_of_view.items():
        model.cam_fovy[camera_index(model, variant.cameras[camera])] = degrees
    for camera, (position, look_at) in variant.camera_poses.items():
        place_camera(model, variant.cameras[camera], position, look_at)
    goal = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    if variant.goal_rgba is not None and goal >= 0 and is_robot_red(model.site_rgba[goal]):
        model.site_rgba[goal] = variant.goal_rgba


def camera_index(model, camera: str) -> int:
    """MuJoCo's index of camera `camera`; ValueError naming it when the model has none."""
    import mujoco

    camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if camera_id < 0:
        raise ValueError(f"the MuJoCo model has no camera {camera!r}")
    return camera_id


def is_robot_red(rgba) -> bool:
    """A red goal marker (reach's, 0.8 0 0): the colour of the Sawyer and its fingertip sites,
    so it merges into the gripper as the hand nears it. Other colours (push's green,
    pick-place's blue) stay: with the instruction, they tell look-alike scenes apart."""
    return rgba[0] > 0.5 and max(rgba[1], rgba[2]) < 0.2


def place_camera(model, camera: str, position, look_at) -> None:
    """Moves MuJoCo camera `camera` (a fixed camera of the world body) to `position`, looking at
    `look_at` with world +z up in the rendered image."""
    import mujoco

    camera_id = camera_index(model, camera)
    if model.cam_bodyid[camera_id] != 0 or model.cam_mode[camera_id] != 0:
        raise ValueError(f"camera {camera!r} is not a fixed world camera; it cannot be placed")
    quaternion = np.zeros(4)
    mujoco.mju_mat2Quat(quaternion, look_at_rotation(position, look_at).reshape(-1))
    model.cam_pos[camera_id] = position
    model.cam_quat[camera_id] = quaternion
