"""What train.py and finetune.py share around their own `main`: the real command line with
its exit guards, the errors refused in one line, and the report printed when a run returns.

The two entry points differ only in their flags and in what their `main` builds; how a run is
started from parsed flags and how its end is told to the user is one piece of code here, so
a pretraining and a fine-tuning run stop and report alike. Imports nothing heavy at import
time: an entry point imports it before its flags parse, and a typo'd flag is refused before
JAX or TensorFlow start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from octo_like.host import (
    console_logging,
    exit_at_once_on,
    exit_at_once_when_distributed,
    exit_past_running_threads,
    settle_garbage_collector,
)


def run_training_command_line(
    define_flags: Callable[..., None], run_from_flags: Callable[[Any], None]
) -> None:
    """An entry point's real command line: `run_from_flags(flags.FLAGS)` once its flags
    (`define_flags(values, sys_argv=...)`) parse. A typo'd config key or a bad config value is
    one line and exit status 2, a `training_refusals()` error one line and exit status 1."""
    from octo_like.config.command_line import run_command_line

    # Outside the command line: a ConfigError's exit status 2 too.
    with exit_at_once_when_distributed(), exit_past_running_threads():
        run_command_line(define_flags, run_from_flags, refusals=training_refusals)


def training_refusals() -> tuple[type[BaseException], ...]:
    """Errors whose message names the problem and its fix: one line, not a traceback."""
    from octo_like.data.validation import DataError
    from octo_like.model.checkpoint_integrity import CheckpointCorruptError
    from octo_like.training.checkpoints.workdir_lock import LeaseLostError, WorkdirInUseError

    return (DataError, CheckpointCorruptError, WorkdirInUseError, LeaseLostError)


def run_and_report(run: Callable[[], Any], workdir: str) -> None:
    """Runs `run()` (the entry point's `main` on its parsed flags, returning the training
    loop's run result: `final_step`, `last_metrics`, `preempted`) with the run's own loggers
    at INFO, then prints the end-of-run report for `workdir`. A failed checkpoint save ends
    the process at once, by name."""
    console_logging(logging.INFO)
    from octo_like.training.checkpoints.checkpoint import CheckpointSaveError
    from octo_like.training.run import loop  # noqa: F401  (JAX, TensorFlow, flax: then settled)

    settle_garbage_collector()

    with exit_at_once_on(CheckpointSaveError):
        result = run()
    report_run_end(result.final_step, result.last_metrics, result.preempted, workdir)


def report_run_end(final_step: int, last_metrics, preempted: bool, workdir: str) -> None:
    """What train.py and finetune.py print when a run returns: where it stopped, its last
    metrics and where its checkpoints are (a preempted run says how to resume)."""
    from octo_like import storage

    if preempted:
        print(
            f"preempted: stopped at step {final_step} with a checkpoint saved; "
            "rerun the same command to resume"
        )
    print(f"finished at step {final_step}; last metrics: {last_metrics}")
    print(f"checkpoints: {storage.join(storage.absolute(workdir), 'checkpoints')}")
