"""What accelerators this host has, read from device files before JAX starts, and the
environment TensorFlow starts in (imports nothing).

The test install carries libtpu (for compile checks against TPU topologies); on a host without
a TPU, JAX would then try to start the TPU runtime and print its failures before falling back
to the CPU. Entry points call `prefer_cpu_without_accelerators` first so a laptop run starts
quietly; an explicit ``JAX_PLATFORMS`` always wins.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import glob
import logging
import os
import sys
import threading
import traceback
from collections.abc import MutableMapping

# TPU VMs expose /dev/accel* (v2-v5p) or /dev/vfio/<n> (v5e, v6e); NVIDIA GPUs /dev/nvidia<n>.
ACCELERATOR_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")


def has_accelerator(patterns=ACCELERATOR_DEVICE_FILES) -> bool:
    return any(glob.glob(pattern) for pattern in patterns)


def prefer_cpu_without_accelerators(
    environ: MutableMapping[str, str] = os.environ, patterns=ACCELERATOR_DEVICE_FILES
) -> bool:
    """Sets ``JAX_PLATFORMS=cpu`` when unset and the host has no accelerator device file;
    returns whether it did."""
    if "JAX_PLATFORMS" in environ or has_accelerator(patterns):
        return False
    environ["JAX_PLATFORMS"] = "cpu"
    return True


def lean_tensorflow(environ: MutableMapping[str, str] = os.environ) -> None:
    """Defaults for the TensorFlow that runs the input pipeline, set before it is imported
    (values already set win): no C++ INFO/WARNING lines, and no oneDNN graph rewrites.

    TensorFlow rewrites every function it instantiates for oneDNN kernels, and tf.data
    instantiates each map of each dataset when an iterator starts: for the 25 datasets of
    `oxe_magic_soup` on 2 cores, statistics took 15.0-15.6 s with the rewrites and 13.1-13.2 s
    without (`scripts/benchmark_startup.py`'s data). The pipeline's ops (parsing, decoding,
    resizing, slicing) have no oneDNN kernels to gain.
    """
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


# The cyclic collector's thresholds once the libraries are settled (`settle_garbage_collector`):
# a young collection every 10k container allocations instead of 700, a full one rarely.
GC_THRESHOLDS = (10_000, 50, 50)


def settle_garbage_collector(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """For entry points and test processes, once JAX, TensorFlow and flax are imported: what is
    alive now (about 440k objects once they are imported) leaves the cyclic collector's reach
    (`gc.freeze`), and it runs less often (`thresholds`). Tracing a model or a tf.data pipeline
    allocates objects by the million; with Python's defaults each full collection walked every
    imported object again, holding the GIL. On 2 cores, tests/training/test_loop_speed.py and
    test_resume_extend.py (11 training runs in one process) spent 10-12 s of their 230-260
    CPU-s collecting (19-20 full collections) and took 170-174 s; settled, 1.6 s, 146-147 s
    (two runs each). Cycles made later are still collected: the second `gc.collect` resets
    the collector's count of long-lived objects, which would otherwise still hold the frozen
    ones and put off every full collection until a quarter of their number had piled up."""
    gc.collect()
    gc.freeze()
    gc.collect()
    gc.set_threshold(*thresholds)


# What a checkpoint save that fails part-way (a full disk) prints from orbax's threads before
# the Checkpointer's named error: orbax logs each failed write with its traceback, then closes
# the save's event loop while its other writes are in flight, and each of those, finishing,
# reports into the closed loop through `sys.unraisablehook` (80-320 tracebacks of
# "Event loop is closed" per run, issue 40). Both say nothing the named error does not.
_CLOSED_LOOP = "Event loop is closed"
_FAILED_WRITE = ("No space left on device", "os_error_code='28'")


class _SaveFailureNoise(logging.Filter):
    """Counts and drops the noise above: the closed-loop reports and orbax's logged write errors
    that say the disk is full."""

    def __init__(self):
        super().__init__()
        self.dropped = 0

    def unraisable(self, unraisable, previous) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == (
            _CLOSED_LOOP
        ):
            self.dropped += 1
            return
        previous(unraisable)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        error = record.exc_info[1] if record.exc_info else None
        causes = []
        while error is not None and len(causes) < 8:  # the write error may be a cause
            causes.append(str(error))
            error = error.__cause__ or error.__context__
        text = "\n".join([record.getMessage(), *causes])
        if any(marker in text for marker in _FAILED_WRITE):
            self.dropped += 1
            return False
        return True


@contextlib.contextmanager
def exit_at_once_on(*errors: type[BaseException]):
    """For entry points: one of `errors` is printed as one line, last, and the process exits
    with status 1 at once. After a checkpoint save fails (a full disk) orbax's threads of that
    save are still failing, and its abandoned write coroutines, finalized at interpreter
    teardown, print raw errors ("ImportError: sys.meta_path is None") after ours; nothing is
    left to save then. While it runs, the noise of such a failing save (`_SaveFailureNoise`)
    is counted instead of printed; the count is said with the error."""
    noise = _SaveFailureNoise()
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: noise.unraisable(unraisable, previous_hook)
    loggers = [logging.getLogger(name) for name in ("absl", "orbax")]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    except errors as error:
        sys.stdout.flush()
        quieted = (
            f" ({noise.dropped} reports of the failed writes not shown)" if noise.dropped else ""
        )
        kind = type(error)
        print(f"{kind.__module__}.{kind.__qualname__}: {error}{quieted}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    finally:
        sys.unraisablehook = previous_hook
        for logger in loggers:
            logger.removeFilter(noise)


@contextlib.contextmanager
def exit_at_once_when_distributed():
    """For entry points: a process of a multi-process run that ends with an error ends at
    once, with the status it would have had: 1 with its traceback for an exception, the code
    of a `SystemExit` (a bad config value's one line and status 2). Raised normally, the error
    did not end the process: the dress rehearsal's process whose peer was SIGKILLed raised
    `JaxRuntimeError`, printed it, and stayed alive, blocked at exit (JAX's distributed
    shutdown and the run's threads wait for peers that will never answer), holding the host's
    accelerators until the scheduler killed it. Its peers fail their next collective and exit
    the same way, so the whole job ends. A single-process run raises as before."""
    with _exit_now_when(_multi_process):
        yield


@contextlib.contextmanager
def exit_past_running_threads():
    """For entry points (train.py, finetune.py; never in a test process): an error that ends
    the process while other Python threads still run ends it at once, with the same status and
    output, after the exit handlers and flushed streams.

    Why: a refusal raised while a daemon thread is inside TensorFlow (the pipeline traced beside
    the model's start, `PipelineThread`) crashed the interpreter's shutdown. Python ends a
    daemon thread that re-takes the GIL during finalization with `pthread_exit`, whose forced
    unwinding meets a C++ `catch (...)` in TensorFlow that does not rethrow: "terminate called
    after throwing an instance of ''", "FATAL: exception not rethrown", SIGABRT, exit 134
    (issue 69: finetune.py's ConfigError on a cold statistics cache, 4 of 4 runs). Skipping
    finalization unwinds no thread.
    """
    with _exit_now_when(_other_threads):
        yield


@contextlib.contextmanager
def _exit_now_when(condition):
    try:
        yield
    except SystemExit as exiting:
        if exiting.code in (None, 0) or not condition():
            raise
        _exit_now(exiting.code if isinstance(exiting.code, int) else 1)
    except Exception:
        if not condition():
            raise
        traceback.print_exc()
        _exit_now(1)


def _other_threads() -> list[str]:
    """Names of the live Python threads besides the main one."""
    main = threading.main_thread()
    return [t.name for t in threading.enumerate() if t is not main and t.is_alive()]


def _multi_process() -> bool:
    jax = sys.modules.get("jax")  # not imported yet (a flag typo): no distributed run either
    return jax is not None and jax.distributed.is_initialized()


def _exit_now(status: int) -> None:
    """Ends the process with `status` after flushed streams, skipping the interpreter's
    finalization. A single process runs its exit handlers first (atexit: the workdir lease,
    staging folders); one of a multi-process run does not: JAX's own handler shuts the
    distributed client down, which waits for, or aborts on, peers that are gone."""
    if _multi_process():
        import jax

        print(f"process {jax.process_index()} of {jax.process_count()}: exiting (status "
              f"{status}) without waiting for the other processes", file=sys.stderr)  # fmt: skip
    else:
        atexit._run_exitfuncs()
        logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# Libraries whose INFO lines (orbax's step bookkeeping, some 1-3 KB long) drown a run's own.
CHATTY_LOGGERS = ("absl", "jax", "orbax", "tensorflow", "tensorstore")


def console_logging(level: int = logging.INFO) -> None:
    """For entry points: the run's own loggers at `level`, third-party ones at WARNING."""
    logging.getLogger().setLevel(level)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
