"""Checkpoints as policies: observation history, chunk execution, gym wrappers and serving.

    from octo_like.inference import Policy
    policy = Policy.from_checkpoint("runs/laptop/checkpoints")
    policy.reset(instruction="open the drawer")
    action = policy.step({"image_primary": frame, "image_wrist": wrist})  # float32[A]

`Policy` (and the JAX model behind it) is imported lazily, so the history, executors and the
client stay importable on a robot computer without the model's dependencies being loaded.
"""

from octo_like.inference.execution import (
    EXECUTION_MODES,
    RecedingHorizon,
    TemporalEnsembler,
    make_executor,
)
from octo_like.inference.history import ObservationHistory, stack_windows

__all__ = [
    "EXECUTION_MODES",
    "ObservationHistory",
    "Policy",
    "PolicySession",
    "RecedingHorizon",
    "TemporalEnsembler",
    "make_executor",
    "stack_windows",
]


def __getattr__(name: str):
    if name in ("Policy", "PolicySession"):
        from octo_like.inference import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'octo_like.inference' has no attribute {name!r}")
