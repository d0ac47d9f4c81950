"""Embodiment variants of the MetaWorld Sawyer: which cameras, which image size and which action
space a dataset (and a policy acting in the simulator) uses.

Different variants give cross-embodiment pretraining and fine-tuning to a new embodiment
something real to do: `default` sees the scene from one corner camera and acts in MetaWorld's own
4-dim action space; `wrist` adds a wrist camera and moves the fixed camera; `metric7` acts in a
7-dim end-effector action space in metres with a [0, 1] gripper (the OXE EEF_POS layout) and
renders larger images; `front` moves one camera in front of the table (`camera_poses`).

Actions are always expressed in the variant's units; `to_env_action` / `from_env_action` convert
to and from MetaWorld's ``[dx, dy, dz, grip] in [-1, 1]`` (xyz scaled by 1/100 m per unit).
Pure Python + numpy: safe to import in simulator worker processes.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping

import numpy as np

from octo_like import schema
from octo_like.data.oxe.spec import (
    SIMULATED_STATE_KEY,
    ActionEncoding,
    DatasetSpec,
    simulated_dataset_spec,
)

# MetaWorld moves the mocap by action[:3] * 1/100 m per step.
METAWORLD_METRES_PER_UNIT = 0.01
PROPRIO_DIM = 4  # end-effector xyz (m) + gripper opening in [0, 1]
STATE_KEY = SIMULATED_STATE_KEY
# A goal-marker colour no robot part and no default-task object or marker has.
GOAL_YELLOW = (0.9, 0.9, 0.0, 1.0)
Point = tuple[float, float, float]
CameraPose = tuple[Point, Point]  # (position, look-at point), world metres


def look_at_rotation(position: Point, look_at: Point) -> np.ndarray:
    """float64[3, 3] whose columns are a MuJoCo camera's x, y, z axes in the world: it looks along
    -z at `look_at`, with image up (after `MetaWorldEnv`'s bottom-up flip) towards world +z."""
    forward = np.subtract(look_at, position).astype(np.float64)
    forward /= np.linalg.norm(forward)
    z_axis = -forward
    # The off-screen buffer is flipped row-wise when read, so the camera's own y points down:
    # world down with its part along the view axis removed (Gram-Schmidt).
    down = np.array([0.0, 0.0, -1.0])
    y_axis = down - z_axis * (down @ z_axis)
    if np.linalg.norm(y_axis) < 1e-6:
        raise ValueError(f"a camera at {position} looking straight down or up has no image up")
    y_axis /= np.linalg.norm(y_axis)
    return np.stack([np.cross(y_axis, z_axis), y_axis, z_axis], axis=1)


@dataclasses.dataclass(frozen=True)
class EmbodimentVariant:
    """Cameras (canonical name -> MuJoCo camera), default image size and action space.

    Attributes:
      cameras: e.g. ``{"primary": "corner2", "wrist": "gripperPOV"}``; the dataset stores camera
        ``c`` under observation key ``image_<c>``.
      image_size: side of the square images rendered by default (collect_demos may override).
      action_space: "metaworld4" (MetaWorld's units) or "metric7" (metres, zero rotation,
        gripper in [0, 1] with 1 = close).
      field_of_view: vertical field of view in degrees per canonical camera, replacing the
        MuJoCo camera's own (MetaWorld's corner cameras see 60 degrees, mostly floor and robot
        base: at 64 px a pixel is ~2.5 cm of table, coarser than a handle or a goal marker).
      camera_poses: per canonical camera, ``(position, look_at)`` in world metres, moving the
        MuJoCo camera there (image up = world +z); cameras not listed keep MetaWorld's pose.
      goal_rgba: colour a red goal marker (MetaWorld's site ``goal``) is drawn in instead:
        MetaWorld draws reach's goal red like the robot and its fingertip sites. Markers of
        other colours keep theirs (they tell tasks with look-alike scenes apart). None: as is.
    """

    name: str
    cameras: Mapping[str, str]
    image_size: int
    action_space: str
    description: str
    field_of_view: Mapping[str, float] = dataclasses.field(default_factory=dict)
    camera_poses: Mapping[str, CameraPose] = dataclasses.field(default_factory=dict)
    goal_rgba: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        if self.action_space not in _ACTION_DIMS:
            raise ValueError(f"variant {self.name!r}: unknown action space {self.action_space!r}")
        if not self.cameras:
            raise ValueError(f"variant {self.name!r}: at least one camera is required")
        unknown = set(self.field_of_view) - set(self.cameras)
        if unknown:
            raise ValueError(f"variant {self.name!r}: field_of_view for unknown {sorted(unknown)}")
        unknown = set(self.camera_poses) - set(self.cameras)
        if unknown:
            raise ValueError(f"variant {self.name!r}: camera_poses for unknown {sorted(unknown)}")
        if self.goal_rgba is not None and (
            len(self.goal_rgba) != 4 or not all(0.0 <= v <= 1.0 for v in self.goal_rgba)
        ):
            raise ValueError(f"variant {self.name!r}: goal_rgba must be 4 values in [0, 1]")
        for camera, (position, look_at) in self.camera_poses.items():
            if np.linalg.norm(np.subtract(look_at, position)) == 0:
                raise ValueError(f"variant {self.name!r}: camera {camera!r} looks at itself")

    def with_cameras(self, cameras: tuple[str, ...] | None) -> EmbodimentVariant:
        """This variant restricted to a subset of its cameras (None: all)."""
        if cameras is None:
            return self
        unknown = [c for c in cameras if c not in self.cameras]
        if unknown or not cameras:
            raise ValueError(
                f"variant {self.name!r} has cameras {list(self.cameras)}; "
                f"cannot keep {list(cameras)}"
            )
        kept = {c: self.cameras[c] for c in cameras}
        fov = {c: v for c, v in self.field_of_view.items() if c in kept}
        poses = {c: v for c, v in self.camera_poses.items() if c in kept}
        return dataclasses.replace(self, cameras=kept, field_of_view=fov, camera_poses=poses)

    def rendering(self) -> dict:
        """What decides the rendered images (a collection's cache key includes it)."""
        return {
            "cameras": dict(self.cameras),
            "field_of_view": dict(self.field_of_view),
            **(
                {"camera_poses": {c: [list(p), list(t)] for c, (p, t) in self.camera_poses.items()}}
                if self.camera_poses
                else {}  # keeps the cache keys of variants collected before poses existed
            ),
            **({"red_goal_rgba": list(self.goal_rgba)} if self.goal_rgba is not None else {}),
            "image_size": self.image_size,
        }

    @property
    def action_dim(self) -> int:
        return _ACTION_DIMS[self.action_space]

    @property
    def observation_keys(self) -> dict[str, str]:
        """Canonical camera -> RLDS observation key of its images."""
        return {camera: schema.image_key(camera) for camera in self.cameras}

    def to_env_action(self, action: np.ndarray) -> np.ndarray:
        """float[A] in this variant's units -> MetaWorld's float32[4], clipped to [-1, 1]."""
        action = np.asarray(action, np.float64)
        if action.shape != (self.action_dim,):
            raise ValueError(
                f"variant {self.name!r} takes actions of shape ({self.action_dim},), "
                f"got {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"non-finite action {action}")
        if self.action_space == "metric7":
            xyz = action[:3] / METAWORLD_METRES_PER_UNIT
            grip = action[6] * 2.0 - 1.0
            action = np.concatenate([xyz, [grip]])
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def from_env_action(self, env_action: np.ndarray) -> np.ndarray:
        """MetaWorld's float[4] -> float32[A] in this variant's units (inverse of the above)."""
        env_action = np.clip(np.asarray(env_action, np.float64), -1.0, 1.0)
        if self.action_space == "metric7":
            xyz = env_action[:3] * METAWORLD_METRES_PER_UNIT
            grip = (env_action[3] + 1.0) / 2.0
            return np.concatenate([xyz, np.zeros(3), [grip]]).astype(np.float32)
        return env_action.astype(np.float32)

    def dataset_spec(self, dataset_name: str | None = None) -> DatasetSpec:
        """The registry entry of a dataset collected with this variant."""
        return simulated_dataset_spec(
            dataset_name or dataset_name_of(self.name),
            tuple(self.cameras),
            ActionEncoding.EEF_POS if self.action_space == "metric7" else ActionEncoding.CUSTOM,
            self.action_dim,
        )


_ACTION_DIMS = {"metaworld4": 4, "metric7": 7}

FRONT = EmbodimentVariant(
    name="front",
    cameras={"primary": "corner4"},
    image_size=64,
    action_space="metaworld4",
    description="one camera in front of the table looking back at the robot, 30 degrees "
    "down: a goal in the air is ambiguous only along its short y side (10 cm) instead of "
    "the corner view's diagonal ray (up to 22 cm), at ~2x the corner view's px per cm; "
    "reach's red goal drawn yellow",
    field_of_view={"primary": 35.0},
    camera_poses={"primary": ((0.0, 1.7, 0.7), (0.0, 0.72, 0.12))},
    goal_rgba=GOAL_YELLOW,
)

VARIANTS: dict[str, EmbodimentVariant] = {
    v.name: v
    for v in (
        EmbodimentVariant(
            name="default",
            cameras={"primary": "corner2"},
            image_size=64,
            action_space="metaworld4",
            description="corner camera zoomed on the table, MetaWorld's 4-dim delta-xyz + grip",
            field_of_view={"primary": 35.0},  # 1.9x the pixels per cm of the stock 60 degrees
        ),
        EmbodimentVariant(
            name="wrist",
            cameras={"primary": "corner3", "wrist": "gripperPOV"},
            image_size=64,
            action_space="metaworld4",
            description="another fixed viewpoint plus a wrist camera; 4-dim action",
        ),
        EmbodimentVariant(
            name="stereo",
            cameras={"primary": "corner2", "secondary": "corner"},
            image_size=64,
            action_space="metaworld4",
            description="the default corner camera plus the opposite corner: depth from two views",
            field_of_view={"primary": 35.0, "secondary": 35.0},
        ),
        EmbodimentVariant(
            name="default_wrist",
            cameras={"primary": "corner2", "wrist": "gripperPOV"},
            image_size=64,
            action_space="metaworld4",
            description="the default corner camera plus a wrist camera: the goal or object grows "
            "in the wrist view as the hand nears it, depth the corner view sees only along a ray",
            field_of_view={"primary": 35.0},
        ),
        FRONT,
        dataclasses.replace(
            FRONT,
            name="front_wrist",
            cameras={**FRONT.cameras, "wrist": "gripperPOV"},
            description="the front camera plus a wrist camera: the puck and goal seen close up "
            "as the hand nears them, where the front view resolves ~2 cm of depth per pixel",
        ),
        EmbodimentVariant(
            name="metric7",
            cameras={"primary": "corner2"},
            image_size=96,
            action_space="metric7",
            description="96px zoomed corner camera; 7-dim EEF delta in metres, gripper in [0, 1]",
            field_of_view={"primary": 35.0},
        ),
    )
}

DATASET_PREFIX = "metaworld_"


def dataset_name_of(variant: str) -> str:
    return DATASET_PREFIX + variant


def get_variant(name: str) -> EmbodimentVariant:
    if name not in VARIANTS:
        close = difflib.get_close_matches(name, VARIANTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(VARIANTS)
        raise ValueError(f"unknown embodiment variant {name!r}{hint} (known: {known})")
    return VARIANTS[name]


def variant_of_dataset(dataset_name: str) -> EmbodimentVariant | None:
    """The variant a ``metaworld_<variant>`` dataset was collected with, else None."""
    if dataset_name.startswith(DATASET_PREFIX):
        return VARIANTS.get(dataset_name[len(DATASET_PREFIX) :])
    return None


def variant_of_mix_member(mix: str, dataset_name: str) -> EmbodimentVariant:
    """The variant of a simulated mix's dataset; ValueError naming both if it is not one."""
    variant = variant_of_dataset(dataset_name)
    if variant is None:
        raise ValueError(
            f"mix {mix!r}: dataset {dataset_name!r} is not a simulated metaworld_<variant>"
        )
    return variant


def dataset_specs() -> dict[str, DatasetSpec]:
    """Registry entries of the default-named datasets of every variant."""
    return {dataset_name_of(name): v.dataset_spec() for name, v in VARIANTS.items()}
