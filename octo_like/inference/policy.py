"""`Policy`: a checkpoint as a controller, in robot units, compiled at load.

    policy = Policy.from_checkpoint("runs/laptop/checkpoints", execution="ensemble")
    policy.reset(instruction="put the cup in the sink")
    while True:
        action = policy.step({"image_primary": uint8[h, w, 3], "proprio": float32[P]})

Two layers:

* `predict_chunks(observations, tasks) -> float32[b, H, A]`: batched and stateless, for
  evaluation over many environments and for the server. Raw robot observations in (any image
  size, raw proprio; see `observations.py`), action chunks in robot units out (unnormalized
  with the checkpoint's statistics of `dataset_name`, padded action dims dropped). Each call
  draws fresh diffusion noise from ``fold_in(key(seed), call_index)``: reproducible, never
  repeated.
* `reset` / `step`: one robot's loop. A `PolicySession` (history + chunk executor + task)
  holds the state; `new_session()` gives independent ones (the server keeps one per client).

Compilation happens at load with a warm-up call on zero inputs (batch 1), so the first real
call runs at steady-state speed (other batch sizes compile on their first call). Every
`predict_chunks` call's wall time is kept (the last `latency_window`) for `latency_ms()`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from octo_like import storage
from octo_like.inference.execution import make_executor
from octo_like.inference.finite import check_actions, check_finite
from octo_like.inference.history import ObservationHistory, add_batch_axis
from octo_like.inference.observations import prepare_observations, resize_images
from octo_like.model.model_checkpoint import latest_finished_step
from octo_like.model.octo_model import OctoModel
from octo_like.normalization import ArrayStatistics
from octo_like.schema import IMAGE_PREFIX, PAD_MASK_DICT, PROPRIO, TIMESTEP_PAD_MASK


class PolicySession:
    """One robot's episode state: observation history, chunk executor and the current task."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.history = ObservationHistory(policy.config.window)
        self.executor = make_executor(
            policy.execution, policy.config.action_horizon, policy.exec_horizon,
            policy.ensemble_decay,
        )  # fmt: skip
        self.tasks: dict[str, Any] | None = None

    def reset(self, instruction: str | None = None, goal: Mapping[str, Any] | None = None):
        """Starts an episode with a language `instruction` and/or `goal` images
        ``{camera: uint8[h, w, 3]}``; with neither, the policy runs unconditioned."""
        self.history.reset()
        self.executor.reset()
        goals = None if goal is None else {k: np.asarray(v)[None] for k, v in goal.items()}
        texts = None if instruction is None else [instruction]
        if texts is None and goals is None:  # unconditioned: language and goals masked out
            texts = [""]
        self.tasks = self.policy.create_tasks(texts, goals)

    def step(self, frame: Mapping[str, Any]) -> np.ndarray:
        """One control step: `frame` is this timestep's ``{key: array}``; returns float32[A]."""
        if self.tasks is None:
            raise RuntimeError("call reset(instruction=..., goal=...) before step()")
        if PROPRIO in frame:  # before the history keeps it, even when no chunk is predicted
            check_finite(f"frame {PROPRIO!r}", frame[PROPRIO])
        window = self.history.push(frame)
        if self.executor.needs_chunk():
            chunk = self.policy.predict_chunks(add_batch_axis(window), self.tasks)[0]
            self.executor.set_chunk(chunk)
        return self.executor.next_action()


class Policy:
    """An `OctoModel` with preprocessing, unnormalization, chunk execution and timings."""

    def __init__(
        self,
        model: OctoModel,
        *,
        dataset_name: str | None = None,
        execution: str = "receding",
        exec_horizon: int | None = None,
        ensemble_decay: float = 0.0,
        seed: int = 0,
        warmup: bool = True,
        latency_window: int = 100,
        source: Mapping[str, Any] | None = None,
    ):
        self.model = model
        self.config = model.config
        self.dataset_name, entry = _select_statistics(model.dataset_statistics, dataset_name)
        self._statistics = entry
        self._action_stats, self._proprio_stats, self._normalization = _unpack(entry, model)
        self.execution = execution
        self.exec_horizon = exec_horizon
        self.ensemble_decay = float(ensemble_decay)
        make_executor(execution, self.config.action_horizon, exec_horizon, ensemble_decay)
        self._rng = jax.random.key(seed)
        self._calls = 0
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._source = dict(source or {})
        self._session = PolicySession(self)
        self.warmup_ms: float | None = None
        if warmup:
            self.warmup()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_dir: str,
        *,
        step: int | None = None,
        dataset_name: str | None = None,
        execution: str = "receding",
        exec_horizon: int | None = None,
        ensemble_decay: float = 0.0,
        seed: int = 0,
        warmup: bool = True,
    ) -> Policy:
        """Loads ``checkpoint_dir/<step>`` (the latest complete step by default).

        `dataset_name` picks whose statistics map proprio in and actions out; required when the
        checkpoint was trained on several datasets.
        """
        if step is None:  # resolved here so that metadata() reports the step loaded
            step = latest_finished_step(checkpoint_dir)
        model = OctoModel.load_pretrained(checkpoint_dir, step)
        source = {"checkpoint": storage.absolute(checkpoint_dir), "step": step}
        return cls(
            model, dataset_name=dataset_name, execution=execution, exec_horizon=exec_horizon,
            ensemble_decay=ensemble_decay, seed=seed, warmup=warmup, source=source,
        )  # fmt: skip

    # ------------------------------------------------------------------ batched core
    def create_tasks(
        self, texts: Sequence[str] | None = None, goals: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """`OctoModel.create_tasks` with goal images ``{camera: uint8[b, h, w, 3]}`` of any
        size (resized to the model's) and unknown goal cameras rejected."""
        if goals is not None:
            goals = self._resize_goals(goals)
        return self.model.create_tasks(texts=texts, goals=goals)

    def predict_chunks(
        self, observations: Mapping[str, Any], tasks: Mapping[str, Any] | Sequence[str] | str
    ) -> np.ndarray:
        """Action chunks float32[b, H, A] in robot units for the last timestep of each window.

        `observations`: batched windows (see `observations.prepare_observations`).
        `tasks`: a dict from `create_tasks` with batch b, one instruction per batch element, or
        one instruction for all.
        """
        start = time.perf_counter()
        actions = self._predict(observations, tasks, count=True)
        with self._lock:
            self._latencies.append((time.perf_counter() - start) * 1e3)
        return actions

    def _predict(self, observations, tasks, *, count: bool) -> np.ndarray:
        network_obs = prepare_observations(
            observations, config=self.config, input_spec=self.model.input_spec,
            proprio_statistics=self._proprio_stats, normalization=self._normalization,
        )  # fmt: skip
        batch = network_obs[TIMESTEP_PAD_MASK].shape[0]
        tasks = self._batched_tasks(tasks, batch)
        with self._lock:  # one model call at a time: one accelerator, ordered rng streams
            rng = jax.random.fold_in(self._rng, self._calls)
            self._calls += int(count)  # the warm-up does not use up call 0's noise
            # The model maps chunks to robot units (dropping padded dims); with no statistics
            # ({}) they stay normalized.
            actions = self.model.sample_actions(
                network_obs, tasks, unnormalization_statistics=self._statistics or {}, rng=rng
            )
        actions = np.asarray(actions, np.float32)
        check_actions(actions)  # never a NaN to a robot
        return actions

    def _batched_tasks(self, tasks, batch: int) -> dict[str, Any]:
        if isinstance(tasks, str):
            return self.create_tasks([tasks] * batch)
        if isinstance(tasks, Mapping):
            sizes = {np.shape(v)[0] for k, v in tasks.items() if k != PAD_MASK_DICT}
            if sizes != {batch}:
                raise ValueError(f"tasks have batch size(s) {sorted(sizes)}, observations {batch}")
            return dict(tasks)
        if isinstance(tasks, Sequence) and all(isinstance(t, str) for t in tasks):
            if len(tasks) != batch:
                raise ValueError(f"{len(tasks)} instructions for a batch of {batch} observations")
            return self.create_tasks(list(tasks))
        raise TypeError(
            f"tasks must be a dict from create_tasks, a list of instructions or one instruction; "
            f"got {type(tasks).__name__}"
        )

    def _resize_goals(self, goals: Mapping[str, Any]) -> dict[str, np.ndarray]:
        spec = self.model.input_spec["task"]
        cameras = sorted(k[len(IMAGE_PREFIX) :] for k in spec if k.startswith(IMAGE_PREFIX))
        out = {}
        for camera, images in goals.items():
            camera = camera.removeprefix(IMAGE_PREFIX)
            if camera not in cameras:
                raise ValueError(f"goal camera {camera!r}: the model takes goals for {cameras}")
            images = np.asarray(images)
            if images.ndim != 4:
                raise ValueError(
                    f"goal {camera!r} must be uint8[b, h, w, 3], got {list(images.shape)}"
                )
            out[camera] = resize_images(
                images, spec[IMAGE_PREFIX + camera]["shape"][:2], self.config.frame_resize
            )
        return out

    # ------------------------------------------------------------------ one robot
    def new_session(self) -> PolicySession:
        """Independent history / executor / task state sharing this policy's model."""
        return PolicySession(self)

    def reset(self, instruction: str | None = None, goal: Mapping[str, Any] | None = None):
        """Starts an episode of the built-in session (see `PolicySession.reset`)."""
        self._session.reset(instruction, goal)

    def step(self, frame: Mapping[str, Any]) -> np.ndarray:
        """One control step of the built-in session: float32[A] in robot units."""
        return self._session.step(frame)

    # ------------------------------------------------------------------ reporting
    def warmup(self, batch: int = 1) -> float:
        """Runs the `predict_chunks` path at `batch` on zero inputs, so everything it compiles
        (the network, the noise key derivation) is compiled before the first real call; returns
        (and keeps) its wall time in ms. Not counted in `latency_ms`, draws no call's noise."""
        start = time.perf_counter()
        self._predict(
            self.example_observation(batch=batch), self.create_tasks([""] * batch), count=False
        )
        self.warmup_ms = (time.perf_counter() - start) * 1e3
        return self.warmup_ms

    def example_observation(self, batch: int | None = 1) -> dict[str, Any]:
        """Zero observations in the layout `predict_chunks` takes (``batch=None``: one window
        without the batch axis, as a client may send it)."""
        spec = self.model.input_spec["observation"]
        lead = () if batch is None else (batch,)
        window = self.config.window
        obs: dict[str, Any] = {
            TIMESTEP_PAD_MASK: np.ones((*lead, window), bool),
        }
        for camera in self.config.cameras:
            key = IMAGE_PREFIX + camera
            obs[key] = np.zeros((*lead, *spec[key]["shape"]), np.uint8)
        if self.config.proprio is not None:
            obs[PROPRIO] = np.zeros((*lead, window, self.proprio_dim), np.float32)
        return obs

    @property
    def proprio_dim(self) -> int | None:
        """The robot's proprio dimension (the dataset's, before padding); None without proprio."""
        if self.config.proprio is None:
            return None
        if self._proprio_stats is not None:
            return self._proprio_stats.dim
        return int(self.model.input_spec["observation"][PROPRIO]["shape"][-1])

    @property
    def action_dim(self) -> int:
        """The robot's action dimension (the dataset's, before padding)."""
        return self.config.action_dim if self._action_stats is None else self._action_stats[0].dim

    def metadata(self) -> dict[str, Any]:
        """Plain (msgpack/JSON-able) description: what to send and what comes back."""
        spec = self.model.input_spec
        cameras = {
            c: list(spec["observation"][IMAGE_PREFIX + c]["shape"][1:3])
            for c in self.config.cameras
        }
        goal_cameras = {
            k[len(IMAGE_PREFIX) :]: list(v["shape"][:2])
            for k, v in spec["task"].items()
            if k.startswith(IMAGE_PREFIX)
        }
        return {
            "cameras": cameras,
            "goal_cameras": goal_cameras,
            "language": self.config.language.encoder != "none",
            "proprio_dim": self.proprio_dim,
            "action_dim": self.action_dim,
            "action_horizon": self.config.action_horizon,
            "window": self.config.window,
            "datasets": sorted(self.model.dataset_statistics),
            "dataset_name": self.dataset_name,
            "actions_normalized": self._action_stats is None,
            "execution": {
                "mode": self.execution,
                "exec_horizon": self.exec_horizon,
                "ensemble_decay": self.ensemble_decay,
            },
            "warmup_ms": self.warmup_ms,
            **self._source,
        }

    def latency_ms(self) -> dict[str, float | int]:
        """Summary of the last `latency_window` `predict_chunks` wall times (warm-up excluded):
        ``{"count", "mean", "p50", "p95", "max"}`` in milliseconds (NaN when count is 0)."""
        with self._lock:
            times = np.array(self._latencies, np.float64)
        if not times.size:
            return {"count": 0, "mean": float("nan"), "p50": float("nan"),
                    "p95": float("nan"), "max": float("nan")}  # fmt: skip
        return {
            "count": int(times.size),
            "mean": float(times.mean()),
            "p50": float(np.percentile(times, 50)),
            "p95": float(np.percentile(times, 95)),
            "max": float(times.max()),
        }


def _select_statistics(
    statistics: Mapping[str, Any], dataset_name: str | None
) -> tuple[str | None, dict | None]:
    if dataset_name is not None:
        # .keys(): the datasets, not Octo's flat keys, which `in` also answers
        if dataset_name not in statistics.keys():  # noqa: SIM118
            raise ValueError(
                f"dataset_name {dataset_name!r} is not in the checkpoint's statistics "
                f"({', '.join(sorted(statistics)) or 'none'})"
            )
        return dataset_name, statistics[dataset_name]
    if len(statistics) == 1:
        return next(iter(statistics.items()))
    if not statistics:
        return None, None  # actions stay normalized; metadata says so
    raise ValueError(
        f"the checkpoint was trained on several datasets ({', '.join(sorted(statistics))}): "
        "pass dataset_name to pick whose statistics map proprio in and actions out"
    )


def _unpack(entry: Mapping[str, Any] | None, model: OctoModel):
    """(action (stats, kind, mask) | None, proprio stats | None, normalization kind)."""
    if entry is None:
        return None, None, "none"
    kind = entry["normalization"]
    action = ArrayStatistics.from_dict(entry["statistics"]["action"])
    if action.dim > model.config.action_dim:
        raise ValueError(
            f"the statistics have {action.dim} action dims, the model predicts "
            f"{model.config.action_dim}"
        )
    proprio = entry["statistics"].get(PROPRIO)
    proprio = None if proprio is None else ArrayStatistics.from_dict(proprio)
    return (action, kind, entry.get("action_normalization_mask")), proprio, kind
