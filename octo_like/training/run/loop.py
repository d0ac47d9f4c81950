"""The training loop shared by pretraining and fine-tuning.

workdir/ holds config.json (the run's identity), checkpoints/<step>/, metrics.jsonl and
tensorboard/. Rerunning the same command resumes from the latest complete checkpoint.

After a resume the data stream does not replay the batches of the interrupted run: the pipeline
is re-seeded with ``seed + resume_step``, so the resumed run sees fresh, reproducible batches.
The run's ``seed`` decides the data stream too (`data_stream_seed`), not only the initializers:
two fine-tuning seeds from one checkpoint would otherwise be the same run.
(Saving the tf.data iterator would mean saving a shuffle buffer of up to 10^5 frames.)

The host never waits needlessly: a background thread tokenizes the next batches and puts them
on the devices (`prefetch.DevicePrefetcher`, `prefetch_batches` ahead) while a step runs; step
metrics stay on the devices until every `log_every` steps; the loop blocks only on the step
before the one it just dispatched, so one step queues behind the running one and host memory
stays bounded. Logged per window: ``perf/step_s`` (wall time per step) and ``perf/data_wait_s``
(time per step blocked on the input pipeline; near step_s means input-bound).
Every `eval_every` steps the loop logs the held-out metrics under ``val/`` and, with a
`ClosedLoopEval`, closed-loop success under ``sim/`` (both in `evaluation.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from octo_like import storage
from octo_like.config.typed import to_plain
from octo_like.data.dataset import skip_function_graph_optimization
from octo_like.model.octo_model import OctoModel
from octo_like.training.checkpoints.checkpoint import CHECKPOINT_SUBDIR, Checkpointer, check_workdir
from octo_like.training.checkpoints.workdir import recorded_num_steps, write_run_config
from octo_like.training.checkpoints.workdir_lock import WorkdirLock
from octo_like.training.config import TrainConfig
from octo_like.training.optim.optimizer import schedule_change
from octo_like.training.parallel import distributed, sharding
from octo_like.training.parallel.runtime import describe_runtime, require_platform
from octo_like.training.run import metrics, run_data
from octo_like.training.run.evaluation import ClosedLoopEval, evaluate_held_out
from octo_like.training.run.model_start import (
    CompileWhileComputing,
    InitialModel,
    ModelInitializer,
    start_model,
)
from octo_like.training.run.pipeline_thread import PipelineThread
from octo_like.training.run.preemption import PreemptionWatch
from octo_like.training.run.prefetch import DevicePrefetcher
from octo_like.training.run.profiling import (
    ProfileWindow,
    cache_directory,
    enable_compilation_cache,
    parse_profile_steps,
)
from octo_like.training.run.progress import Progress
from octo_like.training.run.startup import StartupClock
from octo_like.training.run.step import TrainState, inference_params

log = logging.getLogger(__name__)

# How a run executes, how long and how it reports, not what it trains: changing them never
# blocks a resume. A new num_steps rebuilds the learning-rate schedule for the new length
# and the step count goes on: from the resumed step the rate follows the new schedule (the
# cosine of the longer run), which jumps at that step: a WARNING names both rates
# (tests/training/test_resume_extend.py). optimizer.decay_steps may change with it, so that an
# extended run can keep the saved schedule (docs/training.md, "Extending a run").
RUNTIME_KEYS = (
    "profile_steps", "compilation_cache", "prefetch_batches", "platform", "distributed",
    "num_steps", "log_every", "eval_every", "eval_batches", "eval_action_samples",
    "checkpoint.save_every",
    "checkpoint.keep_last", "checkpoint.keep_every", "tensorboard", "wandb_project",
    "optimizer.decay_steps",
)  # fmt: skip


@dataclasses.dataclass
class RunResult:
    start_step: int
    final_step: int
    state: TrainState
    model: OctoModel
    last_metrics: dict[str, float]
    preempted: bool = False  # stopped at `final_step` on a preemption notice, checkpoint saved


def run(
    config: TrainConfig,
    workdir: str,
    *,
    raw_config: Any,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    init_model: ModelInitializer | None = None,
    closed_loop: ClosedLoopEval | None = None,
) -> RunResult:
    """Trains (or resumes) until `config.num_steps` (or `stop_at_step`, for tests/preemption).

    `init_model`: builds the initial model instead of `OctoModel.from_config` (fine-tuning
    passes one that loads pretrained weights); also called on resume, before the restore.
    `closed_loop`: evaluated every ``closed_loop.every`` steps and at the end on the main
    process of a single-process run; its metrics are logged under ``sim/``.
    The main process holds the workdir (`WorkdirLock`) for the whole run: a second run on it
    is refused at start.
    """
    require_platform(config.platform)
    workdir = storage.absolute(workdir)  # a local path or a URL (gs://...)
    distributed.check_shared_workdir(
        workdir, jax.process_count(), config.distributed.shared_workdir
    )
    main = distributed.is_main_process()
    saved_num_steps = None
    with contextlib.ExitStack() as held:
        if main:
            lock = held.enter_context(WorkdirLock(workdir))
            saved_num_steps = recorded_num_steps(workdir)  # before config.json is rewritten
            status = check_workdir(
                workdir,
                to_plain(raw_config),
                overwrite=overwrite,
                ignore=RUNTIME_KEYS,
                write_config=False,  # written below, once the run is known to start
            )
            log.info("workdir %s: %s", workdir, status)
            if status == "overwritten":  # the lock moved aside with the old workdir
                lock.release()
                held.enter_context(WorkdirLock(workdir))
        return _run_held(
            config, workdir, main, raw_config=raw_config, stop_at_step=stop_at_step,
            init_model=init_model, closed_loop=closed_loop, saved_num_steps=saved_num_steps,
            held=held,
        )  # fmt: skip


def _run_held(
    config: TrainConfig,
    workdir: str,
    main: bool,
    *,
    raw_config: Any,
    stop_at_step: int | None,
    init_model: ModelInitializer | None,
    closed_loop: ClosedLoopEval | None,
    saved_num_steps: int | None = None,
    held: contextlib.ExitStack,
) -> RunResult:
    """`run` once the workdir is held and checked; `saved_num_steps`: the resumed run's;
    `held`: what `run` releases when it returns or fails (the workdir lock)."""
    startup = StartupClock()
    if jax.process_count() > 1:  # others must not open checkpoints while the main one moves
        multihost_utils.sync_global_devices("workdir checked")
    mesh = sharding.make_mesh(config.mesh)
    distributed.check_batch_size(config.data.batch_size, sharding.batch_sharding(mesh))
    run_data.prepare_synthetic_data(config)
    skip_function_graph_optimization()
    enable_compilation_cache(cache_directory(config.compilation_cache, workdir))
    if main:
        log.info("runtime: %s", describe_runtime(mesh))
    shard = distributed.process_shard()
    checkpointer = Checkpointer(storage.join(workdir, CHECKPOINT_SUBDIR), config.checkpoint)
    close_checkpointer = _closed_once(held, checkpointer.close)
    start_step = checkpointer.resume_step() or 0  # falls back past a corrupt latest step

    startup.mark("setup")
    rng = jax.random.key(config.seed)
    init_rng, step_rng = jax.random.split(rng)
    fresh = init_model is None
    early = CompileWhileComputing(config, mesh, step_rng)
    splits = run_data.run_splits(config)  # which split each dataset trains and validates on
    prepared = run_data.prepare_datasets(
        config, splits.sources, while_computing=early if fresh else None
    )
    startup.mark("statistics")
    run_data.check_action_dims(config, prepared)
    train_data = dataclasses.replace(
        config.data, seed=run_data.data_stream_seed(config, start_step)
    )
    # The pipeline is traced and its first batch read in a thread while the model is built and
    # its step compiled for the batch the config and statistics foretell (checked below).
    building = PipelineThread(train_data, shard, prepared)
    foreseen = run_data.foreseen_batch(config, *run_data.statistics_widths(prepared))
    overlapped = foreseen is not None
    if not overlapped:  # the data decides a shape: build for the pipeline's own batch
        foreseen = building.pipeline()[0].example_batch()
        startup.mark("pipeline build")

    statistics = run_data.statistics_entries(config, prepared)

    def make_initial(example) -> InitialModel:
        """The initial model for `example` (arrays or `jax.ShapeDtypeStruct`s, global batch)."""
        if init_model is not None:
            return init_model(example, init_rng, statistics, mesh)
        layout = lambda abstract: sharding.parameter_shardings(abstract, mesh, config.mesh)
        return InitialModel(
            OctoModel.from_config(config.model, example, init_rng, statistics, sharding=layout)
        )

    start = lambda example, early=None: start_model(  # noqa: E731
        config, example, mesh, make_initial, step_rng, fresh=fresh, early=early
    )
    started = start(foreseen, early.step)
    startup.mark("model init")
    pipeline, batches = building.pipeline()
    startup.mark("pipeline build")  # the wait: the build's own time is said alongside
    if overlapped:
        startup.note_alongside("pipeline build", building.build_s)
    actual = run_data.device_batch_spec(
        run_data.host_batch(pipeline.example_batch(), started.initial.model),
        config.data.batch_size,
    )
    mismatch = run_data.batch_mismatch(started.compiled_for, actual)
    if mismatch:  # correct either way; only the start-up time is lost
        log.warning("the batch foreseen from the config and statistics differs from the "
                    "pipeline's (%s): initializing and compiling again for the pipeline's",
                    mismatch)  # fmt: skip
        started = start(pipeline.example_batch())
        startup.mark("model init")
    initial, program, model = started.initial, started.program, started.initial.model
    state = program.state
    to_device = lambda batch: distributed.global_batch(
        run_data.host_batch(batch, model), program.batch_sharding, config.data.batch_size,
        drop_strings=True,
    )  # fmt: skip
    if main and write_run_config(workdir, to_plain(raw_config)):  # data and model are valid
        log.info("wrote %s", storage.join(workdir, "config.json"))
    if start_step:
        log.info("resuming from checkpoint step %d", start_step)
        restored_step, restored = checkpointer.restore_trusted(start_step, state)
        if restored_step != start_step:  # the data stream keeps start_step's seed offset
            log.warning("resuming from step %d instead (step %d failed to restore)",
                        restored_step, start_step)  # fmt: skip
            start_step = restored_step
        state = state if restored is None else restored
        if main and saved_num_steps:
            jump = schedule_change(config.optimizer, saved_num_steps, config.num_steps, start_step)
            if jump:
                log.warning(jump)
        startup.mark("checkpoint restore")
    first = building.first_batch()
    startup.mark("first batch")
    if main:
        log.info("parameters: %s", program.parameter_counts)
        log.info("shardings:\n%s", sharding.describe_shardings(state.params))
        log.info("input threads per stage: %s", config.data.parallelism)
    eval_step, sample_step = program.eval_step, program.sample_step

    writer = metrics.make_writers(
        workdir,
        tensorboard=config.tensorboard,
        wandb_project=config.wandb_project or None,
        is_main_process=main,
        resume_step=start_step,
    )
    close_writer = _closed_once(held, writer.close)  # a URL's metrics are written at close
    end_step = config.num_steps if stop_at_step is None else min(stop_at_step, config.num_steps)
    progress = Progress(end_step, initial_step=start_step, disable=not main)
    close_progress = _closed_once(held, progress.close)
    val_config = dataclasses.replace(config.data, train=False)
    save_kwargs = lambda: dict(
        params=inference_params(state),
        model_config=config.model,
        dataset_statistics=model.dataset_statistics,
        input_spec=model.input_spec,
        base_params=initial.base_params,
    )
    profile = ProfileWindow(
        parse_profile_steps(config.profile_steps),
        storage.join(workdir, "tensorboard"),
        enabled=main,
        quiesce=checkpointer.wait,
    )
    stop_profile = _closed_once(held, profile.stop)
    shares = metrics.DatasetShares()

    def train_to_device(batch):
        if "dataset_name" in batch:
            shares.count(batch["dataset_name"])
        return to_device(batch)

    prefetcher = DevicePrefetcher(
        batches, train_to_device, depth=config.prefetch_batches, first_batches=(first,)
    )
    close_prefetcher = _closed_once(held, prefetcher.close)
    pending, window_start, last = [], start_step, {}
    window_wait = 0.0
    window_clock = step_clock = time.perf_counter()
    step, preempted = start_step, False
    watch = PreemptionWatch(start_step)
    simulate = closed_loop is not None and main and jax.process_count() == 1
    startup.mark("other")  # writers, prefetcher, the run's own log lines
    train_step, compile_s = started.compiled.result()
    startup.mark("step compile")  # the wait: the compile's own time is said alongside
    startup.note_alongside("step compile", compile_s)
    try:
        watch.__enter__()
        profile.after_step(step)
        while step < end_step:
            device_batch, waited = prefetcher.next_batch()
            if step == start_step:  # the first batch on the devices: start-up ends here
                startup.mark("first batch")
            state, step_metrics = train_step(state, device_batch)
            if step == start_step:
                jax.block_until_ready(step_metrics)
                startup.first_step_ran()
                if main:
                    log.info(startup.line())
            if pending:  # one step queued behind the running one, no more
                jax.block_until_ready(pending[-1])
            step += 1
            pending.append(step_metrics)
            window_wait += waited
            now = time.perf_counter()
            progress.update(
                step,
                samples=config.data.batch_size,
                data_wait_s=waited,
                step_s=max(now - step_clock - waited, 0.0),
                loss=last.get("loss"),
            )
            step_clock = now
            profile.after_step(step, step_metrics)
            if step % config.log_every == 0 or step == end_step:
                host = jax.device_get(pending)
                last = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                metrics.check_finite(last, (window_start + 1, step))
                now = time.perf_counter()
                steps_done = step - window_start
                perf = {
                    "perf/step_s": (now - window_clock) / steps_done,
                    "perf/data_wait_s": window_wait / steps_done,
                }
                writer.write(step, {**last, **perf, **shares.take()}, prefix="train")
                progress.log(step, {"loss": last["loss"]} if "loss" in last else {})
                pending, window_start, window_wait = [], step, 0.0
            if splits.validation and (step % config.eval_every == 0 or step == end_step):
                held_out = splits.held_out(prepared)
                val = evaluate_held_out(
                    eval_step, state, val_config, shard, held_out, config, to_device, sample_step
                )
                if val:
                    writer.write(step, val, prefix="val")
                    progress.log(step, {"val_loss": val.get("loss", float("nan"))}, rates=False)
            if simulate and (step % closed_loop.every == 0 or step == end_step):
                model.update_params(distributed.host_copy(inference_params(state)))
                writer.write(step, closed_loop(step, model), prefix="sim")
            checkpointer.save(step, state, **save_kwargs(), force=step == end_step)
            if step < end_step and watch.reached(step):
                checkpointer.save(step, state, **save_kwargs(), force=True)
                checkpointer.wait()
                log.warning(
                    "preemption notice: step %d saved on every process; stopping here "
                    "(rerun the same command to resume)",
                    step,
                )
                preempted = True
                break
            if window_start == step:  # a window just closed: its clock skips eval and saving
                window_clock = step_clock = time.perf_counter()
    finally:  # every resource is released even when one of them fails (a full disk)
        with contextlib.ExitStack() as cleanup:  # run in reverse: watch first, progress last;
            # the profiler stops once the prefetcher's and the checkpointer's threads are done
            for close in (close_progress, close_writer, stop_profile, close_checkpointer,
                          close_prefetcher, watch.__exit__):  # fmt: skip
                cleanup.callback(close)
    model.update_params(distributed.host_copy(inference_params(state)))
    return RunResult(start_step, step, state, model, last, preempted)


def _closed_once(held: contextlib.ExitStack, close: Callable[[], Any]) -> Callable[[], None]:
    """`close`, run at most once: by the loop's cleanup, in its order, or by `held` (in reverse
    order of opening) when the run fails before its loop starts, so nothing it opened (threads,
    files, a wandb run, the checkpointer's logging filter) outlives a failed start-up."""
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            close()

    held.callback(once)
    return once
