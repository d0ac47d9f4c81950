"""What accelerators this host has, read from device files before JAX starts (imports nothing).

The test install carries libtpu (for compile checks against TPU topologies); on a host without
a TPU, JAX would then try to start the TPU runtime and print its failures before falling back
to the CPU. Entry points call `prefer_cpu_without_accelerators` first so a laptop run starts
quietly; an explicit ``JAX_PLATFORMS`` always wins.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
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


@contextlib.contextmanager
def exit_at_once_on(*errors: type[BaseException]):
    """For entry points: one of `errors` is printed last and the process exits with status 1
    at once. After a checkpoint save fails (a full disk) orbax's threads of that save are still
    failing, and its abandoned write coroutines, finalized at interpreter teardown, print raw
    errors ("ImportError: sys.meta_path is None") after ours; nothing is left to save then."""
    try:
        yield
    except errors as error:
        sys.stdout.flush()
        traceback.print_exception(error)
        sys.stderr.flush()
        os._exit(1)


# Libraries whose INFO lines (orbax's step bookkeeping, some 1-3 KB long) drown a run's own.
CHATTY_LOGGERS = ("absl", "jax", "orbax", "tensorflow", "tensorstore")


def console_logging(level: int = logging.INFO) -> None:
    """For entry points: the run's own loggers at `level`, third-party ones at WARNING."""
    logging.getLogger().setLevel(level)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
