"""Checkpoints as policies: observation history, chunk execution, gym wrappers and serving.

    from octo_like.inference import Policy
    policy = Policy.from_checkpoint("runs/laptop/checkpoints")
    policy.reset(instruction="open the drawer")
    action = policy.step({"image_primary": frame, "image_wrist": wrist})  # float32[A]

Modules: `history` (windows of frames), `execution` (receding horizon, temporal ensembling),
`observations` (robot frames -> network inputs), `policy` (`Policy`), `gym_wrappers` (and
Octo's `RHCWrapper` / `NormalizeProprio`), `rng` (Octo's `supply_rng`),
`server` (`PolicyServer`, `ServerLimits`), `client` (`PolicyClient`). Everything but the
history and executors is imported lazily, so `import octo_like.inference` loads neither JAX,
gymnasium nor websockets.
"""

import importlib

from octo_like.inference.execution import (
    EXECUTION_MODES,
    RecedingHorizon,
    TemporalEnsembler,
    make_executor,
)
from octo_like.inference.history import ObservationHistory, stack_windows

_LAZY = {
    "Policy": "policy",
    "PolicySession": "policy",
    "HistoryWrapper": "gym_wrappers",
    "RecedingHorizonWrapper": "gym_wrappers",
    "TemporalEnsembleWrapper": "gym_wrappers",
    "RHCWrapper": "gym_wrappers",
    "NormalizeProprio": "gym_wrappers",
    "supply_rng": "rng",
    "PolicyServer": "server",
    "ServerLimits": "server_limits",
    "PolicyClient": "client",
    "PolicyServerError": "client",
    "PolicyServerBusy": "client",
}

__all__ = [
    "EXECUTION_MODES",
    "ObservationHistory",
    "RecedingHorizon",
    "TemporalEnsembler",
    "make_executor",
    "stack_windows",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"octo_like.inference.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'octo_like.inference' has no attribute {name!r}")
