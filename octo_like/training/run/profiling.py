"""Compilation cache and a profiler window for training runs.

- The persistent compilation cache stores compiled XLA programs on disk, keyed by program and
  backend, so a restarted or resumed run (or a second host reading a shared directory) skips the
  30-60 s compile of an Octo-size step. `TrainConfig.compilation_cache`: ``"workdir"`` (the
  default) is ``<workdir>/compilation_cache``, ``""`` turns it off, anything else is a directory
  (a shared one serves every run that compiles the same program).
- `ProfileWindow` records a `jax.profiler` trace from step START to END into
  ``<workdir>/tensorboard/plugins/profile/<run>/`` (``--config.profile_steps=START,END``), where
  TensorBoard's profile tab (tensorboard-plugin-profile) opens it next to the scalars.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import jax

from octo_like import storage

log = logging.getLogger(__name__)

WORKDIR_CACHE = "workdir"


def cache_directory(setting: str, workdir: str) -> str | None:
    """The cache directory a `compilation_cache` setting names (None = off)."""
    if not setting:
        return None
    if setting == WORKDIR_CACHE:
        return storage.join(workdir, "compilation_cache")
    return storage.absolute(setting)


def enable_compilation_cache(directory: str | None, *, min_compile_seconds: float = 0.0) -> None:
    """Points JAX's persistent cache at `directory` (process-wide: it is a JAX setting).

    Programs compiling in under `min_compile_seconds` are not cached. The default caches every
    program: each parameter initializer of an eager model build is its own small program, and
    the hundreds of them cost more at start-up than the train step (on 2 CPU cores a resumed
    debug run starts in 23 s with them cached, 34 s without).
    """
    from jax.experimental.compilation_cache import compilation_cache

    if directory is None:
        return
    if jax.config.jax_compilation_cache_dir not in (None, directory):
        compilation_cache.reset_cache()  # JAX opens its cache once per process otherwise
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    log.info("compilation cache: %s", directory)


def parse_profile_steps(text: str) -> tuple[int, int] | None:
    """'START,END' -> (START, END) with 0 <= START < END; '' -> None. Errors name the value."""
    if not text:
        return None
    parts = text.split(",")
    try:
        start, end = (int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"profile_steps must be 'START,END' (two step numbers), got {text!r}"
        ) from None
    if not 0 <= start < end:
        raise ValueError(f"profile_steps needs 0 <= START < END, got {text!r}")
    return start, end


class ProfileWindow:
    """Starts a trace once step `start` is done and stops it after step `end` has run.

    Call `after_step(step, outputs)` after each dispatched step with that step's outputs (a
    pytree of arrays); the window waits for them, so the trace holds whole steps. Before it
    stops the trace it calls `quiesce` (the checkpointer's wait): stopping a trace while an
    orbax async save runs can crash the process (SIGSEGV in `_PyEval_SetProfile`, jax's Python
    tracer unhooking the threads; seen in a test run and reproduced in a loop, docs/training.md).
    `stop()` itself does not quiesce: a run's teardown closes the checkpointer before it.
    """

    def __init__(
        self,
        steps: tuple[int, int] | None,
        logdir: str,
        *,
        enabled: bool = True,
        quiesce: Callable[[], None] = lambda: None,
    ):
        self.steps = steps if enabled else None
        self.logdir = logdir
        self.quiesce = quiesce
        self.active = False

    def after_step(self, step: int, outputs=None) -> None:
        if self.steps is None:
            return
        start, end = self.steps
        if step == start and not self.active:
            jax.block_until_ready(outputs)
            jax.profiler.start_trace(self.logdir)
            self.active = True
            log.info("profiling steps %d-%d into %s", start + 1, end, self.logdir)
        elif step >= end and self.active:
            jax.block_until_ready(outputs)
            self.quiesce()
            self.stop()

    def stop(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            log.info("profile written under %s", self.logdir)
