"""Open X-Embodiment: dataset specs, standardization functions and named mixes.

Re-exports are resolved lazily, so ``octo_like.data.oxe.spec`` (pure Python) can be imported by
config code without importing TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ActionEncoding": "spec",
    "DatasetSpec": "spec",
    "UnknownNameError": "spec",
    "STANDARDIZERS": "standardize",
    "StandardizationError": "action_families",
    "check_standardized": "standardize",
    "standardize_trajectory": "standardize",
    "standardizer_for": "standardize",
    "OXE_DATASETS": "registry",
    "get_dataset_spec": "registry",
    "MIXES": "mixes",
    "resolve_mix": "mixes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
