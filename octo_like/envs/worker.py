"""Simulator worker processes: each owns MetaWorld environments and answers requests over a pipe.

Workers are started with the ``spawn`` method and import only numpy, gymnasium, mujoco and
metaworld (a process that imported TensorFlow segfaults at its first MuJoCo render), so the parent
may be a training or evaluation process with TensorFlow and JAX loaded. They also give parallel
environments.

Protocol: the parent sends ``(method, kwargs)``; the worker answers ``("ok", result)`` or
``("error", traceback_text)``. `EnvPool.call` runs one request on every worker in parallel,
`EnvPool.imap_unordered` spreads independent jobs (e.g. whole expert episodes) over idle workers.
A worker that dies (e.g. a GL crash) surfaces as an error naming it and its exit code.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
import traceback
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from octo_like.envs.variants import EmbodimentVariant


class WorkerError(RuntimeError):
    """A request failed in a worker, or the worker died."""


# ---------------------------------------------------------------------- worker side
class _WorkerState:
    """What one worker process holds: its current environment."""

    def __init__(self, gl_backend: str | None):
        self.gl_backend = gl_backend
        self.env = None
        self.env_key = None

    def make(
        self,
        task: str,
        variant: str | EmbodimentVariant,
        image_size: int | None,
        max_episode_steps: int,
        expert_noise: float = 0.0,
    ) -> dict:
        key = (task, variant, image_size, max_episode_steps, expert_noise)
        if key != self.env_key:
            from octo_like.envs.metaworld_env import MetaWorldEnv

            self.close()
            self.env = MetaWorldEnv(
                task,
                variant,
                image_size=image_size,
                max_episode_steps=max_episode_steps,
                expert_noise=expert_noise,
                gl_backend=self.gl_backend,
            )
            self.env_key = key
        return {"action_dim": self.env.variant.action_dim}

    def reset(self, seed: int, with_expert: bool = False) -> dict:
        obs, info = self.env.reset(seed=seed)
        if with_expert:
            info["expert_action"] = self.env.expert_action()
        return {"obs": obs, "info": info}

    def step(self, action, with_expert: bool = False) -> dict:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if with_expert and not (terminated or truncated):
            info["expert_action"] = self.env.expert_action()
        return {
            "obs": obs,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "info": info,
        }

    def expert_episode(
        self,
        task: str,
        variant: str | EmbodimentVariant,
        image_size: int | None,
        max_episode_steps: int,
        expert_noise: float,
        seed: int,
        steps_after_success: int = 0,
        action_labels: str = "executed",
        expert_gain: float = 1.0,
    ) -> dict:
        """Runs the (noisy) scripted expert for one episode; returns its columns."""
        from octo_like.envs.demos_worker import run_expert_episode

        self.make(task, variant, image_size, max_episode_steps, expert_noise)
        return run_expert_episode(self.env, seed, steps_after_success, action_labels, expert_gain)

    def expert_goal(self, seed: int) -> dict:
        """Goal images of the scene of `seed`: the scripted expert plays it out, and the last
        observation before it ends, the same frame a demonstration's goal relabeling can pick, is
        returned as ``{"goal": {camera: uint8[s, s, 3]}, "expert_success": bool}``. The next
        ``reset(seed)`` restores the untouched scene."""
        from octo_like.envs.demos_worker import run_expert_episode

        episode = run_expert_episode(self.env, seed)
        keys = self.env.variant.observation_keys
        goal = {camera: episode["observation"][key][-1] for camera, key in keys.items()}
        return {"goal": goal, "expert_success": episode["success"]}

    def modules(self) -> list[str]:
        return sorted(sys.modules)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env, self.env_key = None, None


def _worker_main(conn: Connection, gl_backend: str | None) -> None:
    from octo_like.envs.rendering import configure_gl

    configure_gl(gl_backend)
    state = _WorkerState(gl_backend)
    try:
        while True:
            try:
                method, kwargs = conn.recv()
            except EOFError:
                return
            if method == "shutdown":
                conn.send(("ok", None))
                return
            try:
                conn.send(("ok", getattr(state, method)(**kwargs)))
            except Exception:  # noqa: BLE001 - the parent re-raises it with the traceback
                conn.send(("error", traceback.format_exc()))
    finally:
        state.close()


# ---------------------------------------------------------------------- parent side
@contextlib.contextmanager
def _main_module_hidden():
    """Stops ``spawn`` from re-running the parent's ``__main__`` in the child.

    multiprocessing re-imports the main script (or ``-m`` module) in every spawned child; a
    script that imports TensorFlow at the top (train.py, evaluate.py) would then poison the
    simulator worker. The worker's target lives in this importable module, so the child does not
    need the parent's main module at all.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__dict__["__spec__"] = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class EnvPool:
    """`num_workers` spawned simulator processes. Use as a context manager (closes them)."""

    def __init__(self, num_workers: int, *, gl_backend: str | None = None):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        context = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs = []
        for index in range(num_workers):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker_main,
                args=(child, gl_backend),
                daemon=True,
                name=f"octo-sim-{index}",
            )
            with _main_module_hidden():
                proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    @property
    def num_workers(self) -> int:
        return len(self._conns)

    def _receive(self, index: int) -> Any:
        try:
            status, payload = self._conns[index].recv()
        except (EOFError, ConnectionError) as error:
            proc = self._procs[index]
            proc.join(timeout=5)
            raise WorkerError(
                f"simulator worker {index} died (exit code {proc.exitcode}); if it crashed in "
                "rendering, check the MUJOCO_GL backend (egl or osmesa)"
            ) from error
        if status == "error":
            raise WorkerError(f"simulator worker {index} failed:\n{payload}")
        return payload

    def call(
        self,
        method: str,
        kwargs_per_worker: Sequence[dict] | None = None,
        workers: Sequence[int] | None = None,
    ) -> list[Any]:
        """Runs `method` on the given workers (default all) in parallel; results in order."""
        workers = list(range(self.num_workers)) if workers is None else list(workers)
        kwargs_per_worker = kwargs_per_worker or [{} for _ in workers]
        if len(kwargs_per_worker) != len(workers):
            raise ValueError("one kwargs dict per worker")
        for index, kwargs in zip(workers, kwargs_per_worker, strict=True):
            self._conns[index].send((method, kwargs))
        return [self._receive(index) for index in workers]

    def imap_unordered(self, method: str, jobs: Iterable[dict]) -> Iterator[tuple[int, Any]]:
        """Runs ``method(**job)`` for every job on whichever worker is free; yields
        ``(job_index, result)`` as jobs finish (at most one job in flight per worker)."""
        jobs = iter(enumerate(jobs))
        busy: dict[int, int] = {}  # worker -> job index

        def submit(worker: int) -> None:
            job = next(jobs, None)
            if job is not None:
                self._conns[worker].send((method, job[1]))
                busy[worker] = job[0]

        for worker in range(self.num_workers):
            submit(worker)
        while busy:
            ready = wait([self._conns[w] for w in busy])
            for worker in [w for w in list(busy) if self._conns[w] in ready]:
                job_index = busy.pop(worker)
                result = self._receive(worker)
                submit(worker)
                yield job_index, result

    def close(self) -> None:
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if proc.is_alive():
                try:
                    conn.send(("shutdown", {}))
                    conn.recv()
                except (EOFError, ConnectionError, BrokenPipeError):
                    pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
