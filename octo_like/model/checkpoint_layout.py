"""What a checkpoint step directory holds and how it is written and read with orbax.

    <checkpoint_dir>/<step>/{params,config,dataset_statistics,input_spec}/  `MODEL_ITEMS`
    <checkpoint_dir>/<step>/checksums.json                                   (checkpoint_integrity)
    <checkpoint_dir>/language_assets/{config.json,spiece.model}              tokenizer files

`OctoModel` saves and loads through these helpers; training checkpoints add their train state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint._src.metadata import array_metadata_store  # what orbax's default uses

from octo_like import storage
from octo_like.model.base_checkpoint import BASE_PARAMS, BaseReference
from octo_like.model.config import ModelConfig

LANGUAGE_ASSETS = "language_assets"  # config.json + spiece.model beside the step directories


MODEL_ITEMS = ("params", "config", "dataset_statistics", "input_spec")
# Orbax writes this file last, inside the renamed step directory: a step without it is
# incomplete (an interrupted save or copy).
FINALIZED_MARKER = "_CHECKPOINT_METADATA"


def model_items(
    params,
    config: Mapping[str, Any],
    dataset_statistics,
    input_spec,
    base_params: BaseReference | None = None,
) -> dict:
    """The orbax items of `MODEL_ITEMS`, which every step directory holds and
    `load_pretrained` reads (training checkpoints add their train state beside them).

    `params`: an `nnx.State` of Params or its pure dict; `config`: `ModelConfig.to_dict()`.
    `base_params`: the parameters to read from a base checkpoint instead (they are left out of
    the ``params`` item, and the optional `BASE_PARAMS` item records the reference).
    """
    if isinstance(params, nnx.State):
        params = params.to_pure_dict()
    items = {}
    if base_params is not None:
        params = base_params.strip(params)
        items[BASE_PARAMS] = ocp.args.JsonSave(base_params.to_dict())
    return {
        "params": ocp.args.StandardSave(params),
        "config": ocp.args.JsonSave(dict(config)),
        "dataset_statistics": ocp.args.JsonSave(dataset_statistics),
        "input_spec": ocp.args.JsonSave(input_spec),
        **items,
    }


# A replicated array is written by its replicas in parallel (each one writes a slice) only when
# every slice holds at least this much. Each slice is its own small device program, compiled per
# shape and device; below a few MiB the compiles cost more than the parallel writes save: on 8
# CPU devices a debug run's 2-step save cycle took 3x as long with every array split, in 4x the
# files (1179 vs 287). Larger arrays are still split while each slice keeps 4 MiB (a 9 MiB
# Octo-Base MLP kernel over 2 replicas, not over 8).
MIN_REPLICA_SLICE_BYTES = 4 * 2**20
_SCALAR_TYPES = (int, float, bytes, np.number)


def type_handler_registry() -> ocp.type_handlers.TypeHandlerRegistry:
    """Orbax's standard type handlers, with jax.Array written replica-parallel only in slices
    of at least `MIN_REPLICA_SLICE_BYTES` (orbax's default splits every replicated array)."""
    keep = (*_SCALAR_TYPES, np.ndarray, str, type(ocp.PLACEHOLDER))
    handlers = [(ty, ocp.type_handlers.get_type_handler(ty)) for ty in keep]
    arrays = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
        array_metadata_store=array_metadata_store.Store(),  # as orbax's default handler
    )
    return ocp.type_handlers.create_type_handler_registry(*handlers, (jax.Array, arrays))


class _StandardHandler(ocp.StandardCheckpointHandler):
    """``StandardCheckpointHandler`` over `type_handler_registry` (orbax's takes no registry;
    the PyTree handler it delegates to does). Same on-disk format and arguments."""

    def __init__(self, *, use_ocdbt: bool):
        super().__init__(use_ocdbt=use_ocdbt)
        self._impl = ocp.PyTreeCheckpointHandler(
            save_concurrent_gb=96,  # StandardCheckpointHandler's defaults
            restore_concurrent_gb=96,
            use_ocdbt=use_ocdbt,
            type_handler_registry=type_handler_registry(),
        )


def handler_registry(items) -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """Orbax handlers for `items`, known up front so a fresh process can read item metadata.

    ``params`` (and any item named in `PER_ARRAY_ITEMS`) is written one directory per array
    rather than in OCDBT's shared files, so a file's checksum names its array."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item in items:
        if item in ARRAY_ITEMS:
            handler = _StandardHandler(use_ocdbt=item not in PER_ARRAY_ITEMS)
            registry.add(item, ocp.args.StandardSave, handler)
            registry.add(item, ocp.args.StandardRestore, handler)
        else:
            registry.add(item, ocp.args.JsonSave)
            registry.add(item, ocp.args.JsonRestore)
    return registry


ARRAY_ITEMS = ("params", "train_state")
PER_ARRAY_ITEMS = ("params",)


# What orbax logs (at WARNING) when nothing is wrong: for every read-only manager (expected when
# loading), and after every save of an item written without OCDBT (orbax looks for per-process
# OCDBT files to merge even then).
EXPECTED_NOTICES = (
    "CheckpointManagerOptions.read_only=True",
    "Given directory is read only",
    "Skipping merge of OCDBT checkpoints",
)


class _DropExpectedNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message[:120] for notice in EXPECTED_NOTICES)


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """Drops orbax's `EXPECTED_NOTICES` while the block runs (its other messages stay)."""
    absl_logger = logging.getLogger("absl")
    quiet = _DropExpectedNotices()
    absl_logger.addFilter(quiet)
    try:
        yield
    finally:
        absl_logger.removeFilter(quiet)


@contextlib.contextmanager
def read_only_manager(directory: str) -> Iterator[ocp.CheckpointManager]:
    """An orbax manager that only reads `directory` (never creates or deletes anything), without
    orbax's warnings that it is read-only: loading a checkpoint is not worth a warning."""
    with quiet_orbax():
        options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        with ocp.CheckpointManager(directory, options=options) as manager:
            yield manager


LANGUAGE_FILES = ("config.json", "spiece.model")


def check_language_assets(config: ModelConfig, checkpoint_dir: str) -> None:
    """Refuses a save whose tokenizer files differ from those already beside the directory's
    steps: every step's checksums cover them, so replacing them would make the other steps
    fail verification (and a resume move them aside)."""
    target = storage.join(checkpoint_dir, LANGUAGE_ASSETS)
    for name in LANGUAGE_FILES:
        source = storage.join(config.language.checkpoint_dir, name)
        destination = storage.join(target, name)
        if not (storage.exists(source) and storage.exists(destination)):
            continue
        if storage.absolute(source) == storage.absolute(destination):
            continue
        if storage.read_bytes(source) != storage.read_bytes(destination):
            raise FileExistsError(
                f"{checkpoint_dir} holds another model's tokenizer ({LANGUAGE_ASSETS}/{name} "
                f"differs from {source}), which its steps' checksums cover: save into a new "
                "directory"
            )


def copy_language_assets(config: ModelConfig, checkpoint_dir: str) -> ModelConfig:
    """Copies config.json / spiece.model so the checkpoint directory is self-contained (a file
    already there with the same bytes is left as it is; `check_language_assets` refuses one
    that differs)."""
    target = storage.join(checkpoint_dir, LANGUAGE_ASSETS)
    storage.makedirs(target)
    for name in LANGUAGE_FILES:
        source = storage.join(config.language.checkpoint_dir, name)
        destination = storage.join(target, name)
        if not storage.exists(source) or storage.absolute(source) == storage.absolute(destination):
            continue
        if storage.exists(destination) and storage.read_bytes(destination) == storage.read_bytes(
            source
        ):
            continue
        storage.copy_file(source, destination)
    return dataclasses.replace(
        config, language=dataclasses.replace(config.language, checkpoint_dir=LANGUAGE_ASSETS)
    )


def with_local_language_assets(config: ModelConfig, checkpoint_dir: str) -> ModelConfig:
    if config.language.encoder == "none" or config.language.checkpoint_dir != LANGUAGE_ASSETS:
        return config
    path = storage.join(checkpoint_dir, LANGUAGE_ASSETS)
    return dataclasses.replace(
        config, language=dataclasses.replace(config.language, checkpoint_dir=path)
    )


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """A saved model's JSON items (`MODEL_ITEMS` but ``params``): what describes it, no weights.

    config: its `ModelConfig`, tokenizer files resolved beside the checkpoint
      (`with_local_language_assets`).
    input_spec: the input spec it was built for.
    dataset_statistics: {dataset name: its statistics entry}, as saved.
    """

    config: ModelConfig
    input_spec: dict
    dataset_statistics: dict | None


def read_model_metadata(
    manager: ocp.CheckpointManager, checkpoint_dir: str, step: int
) -> ModelMetadata:
    """The config, input spec and dataset statistics of step `step` of `checkpoint_dir`, read
    through `manager` (a manager of that directory, e.g. `read_only_manager`)."""
    items = manager.restore(
        step,
        args=ocp.args.Composite(
            config=ocp.args.JsonRestore(),
            input_spec=ocp.args.JsonRestore(),
            dataset_statistics=ocp.args.JsonRestore(),
        ),
    )
    config = with_local_language_assets(ModelConfig.from_dict(items["config"]), checkpoint_dir)
    return ModelMetadata(config, items["input_spec"], items["dataset_statistics"])


def finished_steps(checkpoint_dir: str) -> list[int]:
    """Steps whose save finished (orbax's finalization marker present), ascending."""
    return sorted(
        int(name)
        for name in storage.listdir(checkpoint_dir)
        if name.isdigit() and storage.exists(storage.join(checkpoint_dir, name, FINALIZED_MARKER))
    )


def download_step(checkpoint_dir: str, step: int | None) -> tuple[str, int]:
    """Copies one step (and the language assets) of a checkpoint at a URL orbax cannot read
    into a temporary directory; returns that directory and the step."""
    steps = finished_steps(checkpoint_dir)
    if step is None and not steps:
        raise FileNotFoundError(f"no complete checkpoint under {checkpoint_dir!r}")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise FileNotFoundError(
            f"no complete checkpoint for step {step} under {checkpoint_dir!r} (complete: {steps})"
        )
    local = tempfile.mkdtemp(prefix="octo_like-checkpoint-")
    for name in (str(step), LANGUAGE_ASSETS):
        if storage.isdir(storage.join(checkpoint_dir, name)):
            storage.copy_tree(storage.join(checkpoint_dir, name), storage.join(local, name))
    return local, step
