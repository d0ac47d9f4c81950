"""Turning predicted action chunks ``float32[H, A]`` into one action per control step.

Two strategies, both with the same small interface (`reset`, `needs_chunk`, `set_chunk`,
`next_action`) so a control loop is the same for either:

    while running:
        if executor.needs_chunk():
            executor.set_chunk(policy_chunk(observation))   # float32[H, A]
        action = executor.next_action()                     # float32[A]

* `RecedingHorizon`: execute the first `exec_horizon` actions of a chunk open-loop, then ask
  for a new one (one model call every `exec_horizon` steps: cheap, but reacts late).
* `TemporalEnsembler`: a new chunk every step; the executed action averages every stored
  prediction for the current step (ACT's temporal ensembling: smoother, one call per step).
"""

from __future__ import annotations

from collections import deque

import numpy as np

EXECUTION_MODES = ("receding", "ensemble")


def _as_chunk(chunk, what: str) -> np.ndarray:
    chunk = np.asarray(chunk)
    if chunk.ndim != 2 or chunk.dtype.kind not in "fiu":
        raise ValueError(
            f"{what}: expected an action chunk float32[H, A], got {chunk.dtype}{list(chunk.shape)}"
        )
    return chunk.astype(np.float32)


class RecedingHorizon:
    """Executes the first `exec_horizon` actions of each chunk, then needs a new chunk.

    A chunk longer than `exec_horizon` is fine (its tail is discarded); a shorter one is an
    error, since the loop would run out of actions.
    """

    def __init__(self, exec_horizon: int):
        if not isinstance(exec_horizon, int) or exec_horizon < 1:
            raise ValueError(
                f"RecedingHorizon: exec_horizon must be an int >= 1, got {exec_horizon!r}"
            )
        self.exec_horizon = exec_horizon
        self.reset()

    def reset(self) -> None:
        self._chunk: np.ndarray | None = None
        self._index = 0

    def needs_chunk(self) -> bool:
        return self._chunk is None or self._index >= self.exec_horizon

    def set_chunk(self, chunk) -> None:
        """`chunk` float32[H, A] with H >= exec_horizon; replaces any unexecuted remainder."""
        chunk = _as_chunk(chunk, "RecedingHorizon.set_chunk")
        if chunk.shape[0] < self.exec_horizon:
            raise ValueError(
                f"RecedingHorizon: chunk has {chunk.shape[0]} actions, fewer than "
                f"exec_horizon={self.exec_horizon}"
            )
        self._chunk = chunk
        self._index = 0

    def next_action(self) -> np.ndarray:
        """float32[A]: the next action of the current chunk."""
        if self.needs_chunk():
            raise RuntimeError("RecedingHorizon: no actions left; call set_chunk first")
        action = self._chunk[self._index].copy()
        self._index += 1
        return action


class TemporalEnsembler:
    """Averages, for the current step, the predictions of the last `action_horizon` chunks.

    A chunk set at step s predicts steps s .. s+H-1, so at step t the chunk of age
    ``k = t - s`` (0 = set this step) contributes its row k, for k < H. Weights are
    ``exp(-decay * k)``, normalized to sum to 1:

    * ``decay = 0``: a plain mean;
    * ``decay > 0``: NEWER predictions weigh more (reacts faster to new observations);
    * ``decay < 0``: OLDER predictions weigh more, as in ACT and Octo, whose ``w_i = exp(-m i)``
      counts i from the oldest prediction; their m corresponds to ``decay = -m`` here.

    `set_chunk` must be called before every `next_action` (`needs_chunk` is True after each).
    """

    def __init__(self, action_horizon: int, decay: float = 0.0):
        if not isinstance(action_horizon, int) or action_horizon < 1:
            raise ValueError(
                f"TemporalEnsembler: action_horizon must be an int >= 1, got {action_horizon!r}"
            )
        if not np.isfinite(decay):
            raise ValueError(f"TemporalEnsembler: decay must be finite, got {decay!r}")
        self.action_horizon = action_horizon
        self.decay = float(decay)
        self.reset()

    def reset(self) -> None:
        self._chunks: deque[np.ndarray] = deque(maxlen=self.action_horizon)  # oldest first
        self._fresh = False

    def needs_chunk(self) -> bool:
        return not self._fresh

    def set_chunk(self, chunk) -> None:
        """`chunk` float32[action_horizon, A], predicted at the current step."""
        chunk = _as_chunk(chunk, "TemporalEnsembler.set_chunk")
        if chunk.shape[0] != self.action_horizon:
            raise ValueError(
                f"TemporalEnsembler: chunk has {chunk.shape[0]} actions, expected "
                f"action_horizon={self.action_horizon}"
            )
        if self._chunks and chunk.shape[1] != self._chunks[-1].shape[1]:
            raise ValueError(
                f"TemporalEnsembler: action dim changed from {self._chunks[-1].shape[1]} to "
                f"{chunk.shape[1]} within an episode (call reset() between episodes)"
            )
        if self._fresh:  # two chunks for one step: the newer replaces the older
            self._chunks.pop()
        self._chunks.append(chunk)
        self._fresh = True

    def weights(self) -> np.ndarray:
        """float64[n]: the normalized weights of the stored chunks, oldest first."""
        ages = np.arange(len(self._chunks) - 1, -1, -1, dtype=np.float64)
        weights = np.exp(-self.decay * ages)
        return weights / weights.sum()

    def next_action(self) -> np.ndarray:
        """float32[A]: the weighted mean of all stored predictions for the current step."""
        if not self._fresh:
            raise RuntimeError("TemporalEnsembler: call set_chunk before each next_action")
        n = len(self._chunks)
        predictions = np.stack([chunk[n - 1 - i] for i, chunk in enumerate(self._chunks)]).astype(
            np.float64
        )  # [n, A]: row age of each chunk, oldest first
        self._fresh = False
        return (self.weights() @ predictions).astype(np.float32)


def make_executor(
    mode: str, action_horizon: int, exec_horizon: int | None = None, decay: float = 0.0
) -> RecedingHorizon | TemporalEnsembler:
    """The executor for `mode` (one of `EXECUTION_MODES`).

    ``receding``: `exec_horizon` defaults to the whole chunk; ``ensemble``: `exec_horizon` must
    be None or 1 (it executes one action per chunk by definition).
    """
    if mode == "receding":
        horizon = action_horizon if exec_horizon is None else exec_horizon
        if horizon > action_horizon:
            raise ValueError(
                f"exec_horizon={horizon} exceeds the model's action_horizon={action_horizon}"
            )
        return RecedingHorizon(horizon)
    if mode == "ensemble":
        if exec_horizon not in (None, 1):
            raise ValueError(
                f"execution='ensemble' executes one action per chunk; exec_horizon={exec_horizon} "
                "is only for execution='receding'"
            )
        return TemporalEnsembler(action_horizon, decay)
    raise ValueError(f"unknown execution {mode!r}; choose one of {EXECUTION_MODES}")
