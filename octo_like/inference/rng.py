"""`supply_rng`: Octo's policy-function wrapper (octo/utils/train_callbacks.py), which hands
`OctoModel.sample_actions` a fresh random key on every call.

    from octo_like.inference.rng import supply_rng

    policy_fn = supply_rng(partial(model.sample_actions, unnormalization_statistics=...))
    actions = policy_fn(observations, tasks)  # calls sample_actions(..., rng=<next key>)

Imports JAX only when a wrapper is made (`octo_like.inference` stays light).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def supply_rng(f: Callable[..., Any], rng: Any = None) -> Callable[..., Any]:
    """``f`` called as ``f(*args, rng=key, **kwargs)`` with a new key each call.

    The keys are Octo's sequence: starting from `rng` (default ``jax.random.PRNGKey(0)``), each
    call splits the carried key into (next carried key, key passed on). Every wrapper carries its
    own key, so two wrappers made with the same `rng` give the same keys.
    """
    import jax

    state = [jax.random.PRNGKey(0) if rng is None else rng]

    def wrapped(*args, **kwargs):
        state[0], key = jax.random.split(state[0])
        return f(*args, rng=key, **kwargs)

    return wrapped
