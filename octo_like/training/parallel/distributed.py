"""Multi-host setup and per-process data -> global arrays.

`initialize` is the one place ``jax.distributed.initialize`` is called; entry points call it
first thing, before any JAX computation. Library code never does.

Every process reads its own part of the data (`process_shard`) and batches
``global_batch_size // jax.process_count()`` examples; `global_batch` assembles those local
batches into one global `jax.Array` per key, split over the devices of the mesh.

Environment variables read by `initialize` (the config's own fields take precedence):

    OCTO_DISTRIBUTED          "1" / "0": force multi-host on or off; when "1" with no address,
                              JAX detects the cluster itself (SLURM, Open MPI, TPU pods, ...)
    OCTO_COORDINATOR_ADDRESS  "host:port" of process 0's coordinator service
    OCTO_NUM_PROCESSES        total number of processes
    OCTO_PROCESS_ID           this process's index in [0, OCTO_NUM_PROCESSES)
    OCTO_LOCAL_DEVICE_IDS     optional, comma-separated local device ids this process uses

Setting the address, count and id (all three) enables multi-host without OCTO_DISTRIBUTED.
With none of them set, a multi-process cluster is detected from its own variables (see
`detect_cluster`: SLURM with several tasks, Open MPI, TPU pods on GKE or multi-slice, Cloud
TPU VMs, Kubernetes indexed Jobs) and JAX's own cluster detection then fills in the rest;
OCTO_DISTRIBUTED=0 (or `enabled=False`) turns that off.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from octo_like import storage
from octo_like.data.rlds import ProcessShard

ENV_ENABLED = "OCTO_DISTRIBUTED"
ENV_COORDINATOR_ADDRESS = "OCTO_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "OCTO_NUM_PROCESSES"
ENV_PROCESS_ID = "OCTO_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "OCTO_LOCAL_DEVICE_IDS"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-host run.

    `enabled`: True / False, or None to decide from the environment (see the module docstring).
    The other fields, when set, override the matching environment variables; leave all of
    address / count / id unset to let JAX detect the cluster.
    """

    enabled: bool | None = None
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: int | tuple[int, ...] | None = None
    # A local workdir path that every host mounts (NFS, Filestore, Lustre): without it, a run
    # of several processes needs a URL workdir (gs://...), which every host can reach.
    shared_workdir: bool = False

    def __post_init__(self):
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(
                f"DistributedConfig.num_processes must be >= 1, not {self.num_processes}"
            )
        if self.process_id is not None and self.process_id < 0:
            raise ValueError(f"DistributedConfig.process_id must be >= 0, not {self.process_id}")
        if self.enabled is False and self.coordinator_address is not None:
            raise ValueError(
                "DistributedConfig: enabled=False contradicts coordinator_address="
                f"{self.coordinator_address!r}"
            )
        if isinstance(self.local_device_ids, str):
            raise ValueError(
                f"DistributedConfig.local_device_ids must be ints, not {self.local_device_ids!r}"
            )
        if isinstance(self.local_device_ids, Sequence):
            object.__setattr__(self, "local_device_ids", tuple(self.local_device_ids))


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def _env_enabled(environ: Mapping[str, str]) -> bool | None:
    raw = environ.get(ENV_ENABLED)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {ENV_ENABLED}={raw!r} is not one of {_TRUE + _FALSE}")


def _more_than_one(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip()
    return raw.isdigit() and int(raw) > 1


def detect_cluster(
    environ: Mapping[str, str] = os.environ,
    path_exists=os.path.exists,
    module_available=lambda name: importlib.util.find_spec(name) is not None,
) -> str | None:
    """The multi-process cluster this process runs in, by the variables each launcher sets
    (the ones JAX's cluster detection reads), or None (a single process)."""
    if "SLURM_JOB_ID" in environ and _more_than_one(environ, "SLURM_NTASKS"):
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in environ and _more_than_one(environ, "OMPI_COMM_WORLD_SIZE"):
        return "openmpi"
    if environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu-multislice"
    if "," in environ.get("TPU_WORKER_HOSTNAMES", "") or "," in environ.get(
        "TPU_PROCESS_ADDRESSES", ""
    ):
        return "tpu-gke"
    if "KUBERNETES_SERVICE_HOST" in environ and "JOB_COMPLETION_INDEX" in environ:
        return "kubernetes"
    if module_available("libtpu") and (path_exists("/dev/accel0") or path_exists("/dev/vfio/0")):
        return "tpu-vm"  # single- or multi-host: JAX asks the TPU metadata which
    return None


def initialize_arguments(
    config: DistributedConfig, environ: Mapping[str, str] = os.environ
) -> dict[str, Any] | None:
    """Keyword arguments for ``jax.distributed.initialize``, or None for a single-process run.

    Raises ValueError when only some of address / count / id are given, naming the missing
    ones: a half-specified cluster would otherwise hang or fail deep inside JAX.
    """
    if config.enabled is False:
        return None
    address = config.coordinator_address or environ.get(ENV_COORDINATOR_ADDRESS) or None
    num_processes = (
        config.num_processes
        if config.num_processes is not None
        else _env_int(environ, ENV_NUM_PROCESSES)
    )
    process_id = (
        config.process_id if config.process_id is not None else _env_int(environ, ENV_PROCESS_ID)
    )
    given = {
        f"coordinator_address ({ENV_COORDINATOR_ADDRESS})": address,
        f"num_processes ({ENV_NUM_PROCESSES})": num_processes,
        f"process_id ({ENV_PROCESS_ID})": process_id,
    }
    enabled = config.enabled
    if enabled is None:
        enabled = _env_enabled(environ)
    if enabled is None:
        enabled = any(value is not None for value in given.values()) or (
            detect_cluster(environ) is not None
        )
    if not enabled:
        return None

    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        raise ValueError(
            f"distributed setup is missing {', '.join(missing)}: give address, number of "
            "processes and process id together, or none of them to let JAX detect the cluster"
        )
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"process_id {process_id} is not in [0, num_processes={num_processes})")

    local_device_ids = config.local_device_ids
    if local_device_ids is None and environ.get(ENV_LOCAL_DEVICE_IDS, "").strip():
        raw = environ[ENV_LOCAL_DEVICE_IDS]
        try:
            local_device_ids = tuple(int(part) for part in raw.split(","))
        except ValueError:
            raise ValueError(
                f"environment variable {ENV_LOCAL_DEVICE_IDS}={raw!r} is not a comma-separated "
                "list of integers"
            ) from None
    return {
        "coordinator_address": address,
        "num_processes": num_processes,
        "process_id": process_id,
        "local_device_ids": local_device_ids,
    }


def initialize(config: DistributedConfig, environ: Mapping[str, str] = os.environ) -> None:
    """Join the multi-host run described by `config` / `environ`; a no-op for a single process.

    Must run before any JAX computation. Idempotent: a second call (or a call after someone
    else initialized) checks the process count matches and returns.
    """
    arguments = initialize_arguments(config, environ)
    if arguments is None:
        return
    if jax.distributed.is_initialized():
        wanted = arguments["num_processes"]
        if wanted is not None and wanted != jax.process_count():
            raise RuntimeError(
                f"jax.distributed is already initialized with {jax.process_count()} processes, "
                f"not the {wanted} requested"
            )
        return
    jax.distributed.initialize(**arguments)


def check_shared_workdir(workdir: str, process_count: int, declared_shared: bool) -> None:
    """Refuses a local workdir for a run of several processes unless declared shared: each
    host would write its own checkpoints and metrics where the others cannot see them, and a
    restarted host would resume from a step the others never saved."""
    if process_count <= 1 or declared_shared or storage.has_scheme(workdir):
        return
    raise ValueError(
        f"workdir {workdir} is a local path, but this run has {process_count} processes on "
        "several hosts: use a URL every host can reach (--workdir gs://BUCKET/runs/NAME), or, "
        "if this path is on a filesystem every host mounts (NFS, Filestore, Lustre), say so "
        "with --config.distributed.shared_workdir=True"
    )


def process_shard() -> ProcessShard:
    """Which part of every dataset this process reads."""
    return ProcessShard(jax.process_index(), jax.process_count())


def is_main_process() -> bool:
    """Process 0 writes logs and non-array checkpoint files; all processes save arrays."""
    return jax.process_index() == 0


def broadcast_text(text: str | None) -> str:
    """Process 0's `text` on every process (others pass None); a collective: all must call."""
    from jax.experimental import multihost_utils

    data = np.frombuffer((text or "").encode(), np.uint8) if is_main_process() else None
    length = int(multihost_utils.broadcast_one_to_all(np.int32(0 if data is None else data.size)))
    buffer = np.zeros(length, np.uint8) if data is None else data
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode()


def host_copy(tree: Any) -> Any:
    """Numpy copies of a tree of (possibly sharded) arrays, on every process.

    `jax.device_get` needs every shard on this process; with FSDP spanning hosts, each process
    holds only its own, so the arrays are all-gathered across processes instead.
    """
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def _unflatten(flat: Mapping[tuple, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for (*parents, leaf), value in flat.items():
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def check_batch_size(global_batch_size: int, batch_sharding: NamedSharding) -> None:
    """Fails before any data is read when the batch does not split over processes and the
    mesh's batch shards."""
    shards = batch_shards(batch_sharding)
    processes = jax.process_count()
    for count, what in ((processes, "processes"), (shards, "batch shards of the mesh")):
        if global_batch_size % count:
            raise ValueError(
                f"data.batch_size={global_batch_size} is not divisible by the {count} {what} "
                f"{dict(batch_sharding.mesh.shape)}; use a multiple of {count}"
            )


def batch_shards(sharding: NamedSharding) -> int:
    """How many pieces `sharding` cuts the leading axis into."""
    if len(sharding.spec) == 0 or sharding.spec[0] is None:
        return 1
    axes = sharding.spec[0] if isinstance(sharding.spec[0], tuple) else (sharding.spec[0],)
    return int(np.prod([sharding.mesh.shape[axis] for axis in axes]))


def _addressable_rows(sharding: NamedSharding, global_batch_size: int) -> int:
    """How many distinct rows of the global batch this process's devices hold."""
    index_map = sharding.addressable_devices_indices_map((global_batch_size,))
    rows = set()
    for index in index_map.values():
        rows.update(range(*index[0].indices(global_batch_size)))
    return len(rows)


def global_batch(
    local_batch: Mapping[str, Any],
    sharding: NamedSharding,
    global_batch_size: int,
    *,
    drop_strings: bool = False,
) -> dict[str, Any]:
    """This process's numpy batch -> global `jax.Array`s split by `sharding` on the batch axis.

    `local_batch`: nested mapping of arrays ``[local_b, ...]`` with
    ``local_b = global_batch_size // jax.process_count()``; returns the same nesting with
    ``[global_batch_size, ...]`` arrays. String / object leaves (``dataset_name``, raw language)
    cannot live on devices: they raise ValueError, or are left out with `drop_strings=True`.
    """
    flat = _flatten(local_batch)
    if not flat:
        raise ValueError("global_batch: the local batch has no arrays")
    shards = batch_shards(sharding)
    if global_batch_size % shards:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {shards} batch "
            f"shards of the mesh {dict(sharding.mesh.shape)}"
        )
    process_count = jax.process_count()
    local_rows = _addressable_rows(sharding, global_batch_size)

    arrays: dict[tuple, np.ndarray] = {}
    names = {key: "/".join(map(str, key)) for key in flat}
    for key, value in flat.items():
        path = names[key]
        array = np.asarray(value)
        if array.dtype.kind in "OSUV":
            if drop_strings:
                continue
            raise ValueError(
                f"batch leaf {path!r} has dtype {array.dtype}: strings/objects cannot become "
                "device arrays; tokenize it first or pass drop_strings=True"
            )
        if array.ndim == 0:
            raise ValueError(f"batch leaf {path!r} is a scalar; every leaf needs a batch axis")
        arrays[key] = array
    if not arrays:
        raise ValueError("global_batch: every leaf of the local batch is a string/object array")

    first_key, first = next(iter(arrays.items()))
    first_path, local_size = names[first_key], first.shape[0]
    for key, array in arrays.items():
        if array.shape[0] != local_size:
            raise ValueError(
                f"batch leaf {names[key]!r} has {array.shape[0]} rows but {first_path!r} has "
                f"{local_size}: all leaves must share the batch axis"
            )
    if local_size * process_count != global_batch_size:
        raise ValueError(
            f"local batch size {local_size} x {process_count} processes != global batch size "
            f"{global_batch_size}"
        )
    if local_size != local_rows:
        raise ValueError(
            f"this process's devices hold {local_rows} rows of the global batch of "
            f"{global_batch_size}, but the local batch has {local_size}"
        )
    global_arrays = {
        key: jax.make_array_from_process_local_data(
            sharding, array, (global_batch_size, *array.shape[1:])
        )
        for key, array in arrays.items()
    }
    return _unflatten(global_arrays)


def on_main_process_then_sync(write: Callable[[], None], name: str) -> None:
    """Runs `write` (e.g. writing generated data) on the main process only, then makes every
    process wait for it, so no host reads what is not written yet."""
    if is_main_process():
        write()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
