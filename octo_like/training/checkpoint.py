"""Training checkpoints with automatic resume, and the workdir as the run's identity.

Layout (one orbax `CheckpointManager` rooted at ``workdir/checkpoints``)::

    workdir/config.json                   the run's config; a rerun with the same one resumes
    workdir/checkpoints/<step>/           train_state, params, config, dataset_statistics,
                                          input_spec (what `OctoModel.load_pretrained` reads)
    workdir/checkpoints/language_assets/  tokenizer files, so the directory is self-contained

Orbax writes each step into ``<step>.orbax-checkpoint-tmp-*`` and renames it when complete;
`Checkpointer.latest_step` additionally requires the finalization metadata and every item,
so an interrupted or half-copied step is never resumed from.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from octo_like.model.base_checkpoint import BASE_PARAMS, BaseReference
from octo_like.model.config import ModelConfig
from octo_like.model.octo_model import (
    LANGUAGE_ASSETS,
    MODEL_ITEMS,
    copy_language_assets,
    model_items,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"
TRAIN_STATE = "train_state"
# The model's items (what `OctoModel.load_pretrained` reads), plus the train state.
ITEMS = (TRAIN_STATE, *MODEL_ITEMS)
_FINALIZED_MARKER = "_CHECKPOINT_METADATA"  # written by orbax last, inside the renamed step dir


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Save every `save_every` steps; keep the last `keep_last` and, forever, every step
    divisible by `keep_every` (None: none kept beyond the last ones)."""

    save_every: int = 1000
    keep_last: int = 3
    keep_every: int | None = None
    async_save: bool = True

    def __post_init__(self):
        if self.save_every < 1:
            raise ValueError(f"checkpoint.save_every must be >= 1, got {self.save_every}")
        if self.keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {self.keep_last}")
        if self.keep_every is not None and (
            self.keep_every < 1 or self.keep_every % self.save_every
        ):
            raise ValueError(
                f"checkpoint.keep_every ({self.keep_every}) must be a positive multiple of "
                f"save_every ({self.save_every}), otherwise no periodic checkpoint is ever kept"
            )


class Checkpointer:
    """Async orbax checkpoints of the train state plus a loadable model. Call every method on
    every process (orbax synchronizes hosts and writes JSON items from the primary only)."""

    def __init__(self, checkpoint_dir: str, config: CheckpointConfig):
        self.directory = os.path.abspath(checkpoint_dir)
        self.config = config
        policies = [ocp.checkpoint_managers.LatestN(config.keep_last)]
        if config.keep_every is not None:
            policies.append(ocp.checkpoint_managers.EveryNSteps(config.keep_every))
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.AnySavePolicy(
                [
                    ocp.checkpoint_managers.FixedIntervalPolicy(config.save_every),
                    # Saves at the step every host agrees on after a preemption notice.
                    ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
                ]
            ),
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=config.async_save,
            cleanup_tmp_directories=True,  # leftovers of interrupted saves
            create=True,
        )
        # Handlers known up front, so a fresh process (resume) can read item metadata.
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        for item in (*ITEMS, BASE_PARAMS):  # BASE_PARAMS: optional (see base_checkpoint.py)
            kind = "Standard" if item in (TRAIN_STATE, "params") else "Json"
            registry.add(item, getattr(ocp.args, f"{kind}Save"))
            registry.add(item, getattr(ocp.args, f"{kind}Restore"))
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=registry
        )
        self._language_copied = False

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        """Steps of complete training checkpoints, ascending (waits for pending saves)."""
        self.wait()
        self._manager.reload()
        return [s for s in sorted(self._manager.all_steps()) if self._is_complete(s)]

    def latest_step(self) -> int | None:
        """The newest complete training checkpoint, or None for a fresh run."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def should_save(self, step: int) -> bool:
        """True at multiples of `save_every` (or on preemption) for a step not yet saved."""
        return self._manager.should_save(step)

    def _is_complete(self, step: int) -> bool:
        path = os.path.join(self.directory, str(step))
        missing = [name for name in ITEMS if not os.path.isdir(os.path.join(path, name))]
        if not os.path.isfile(os.path.join(path, _FINALIZED_MARKER)):
            missing.append(_FINALIZED_MARKER)
        if missing:
            log.warning("ignoring incomplete checkpoint %s (missing %s)", path, missing)
        return not missing

    # ------------------------------------------------------------------ save
    def save(
        self,
        step: int,
        train_state: Any,
        *,
        params: Any,
        model_config: Mapping[str, Any] | ModelConfig,
        dataset_statistics: Mapping[str, Any],
        input_spec: Mapping[str, Any],
        base_params: BaseReference | None = None,
        force: bool = False,
    ) -> bool:
        """Starts an async save if `should_save(step)` or `force`; returns whether it did.

        `train_state`: pytree of (possibly sharded) jax arrays; it may be donated as soon as
        this returns (orbax copies device data to host before returning). `params`: the
        model's parameters (pure dict or `nnx.State`), saved again as their own item so the
        step directory loads with `OctoModel.load_pretrained`; with `base_params`, the
        parameters it references are left out of that item (the train state keeps them all).
        A step that already exists is never overwritten (returns False).
        """
        if step in self._manager.all_steps():
            self.wait()  # it may be this manager's own save, still in flight
            if self._is_complete(step):
                log.info("checkpoint for step %d already exists; not saving again", step)
                return False
            log.warning("deleting the incomplete step %d to save it again", step)
            self._manager.delete(step)
        if not force and not self.should_save(step):
            return False
        items = model_items(
            params,
            self._self_contained(model_config),
            _jsonable(dataset_statistics, "stats"),
            _jsonable(input_spec, "input_spec"),
            base_params,
        )
        args = ocp.args.Composite(**{TRAIN_STATE: ocp.args.StandardSave(train_state), **items})
        saved = self._manager.save(step, args=args, force=True)
        if saved:
            log.info(
                "saving checkpoint %s/%d (async=%s)", self.directory, step, self.config.async_save
            )
        return saved

    def _self_contained(self, model_config: Mapping[str, Any] | ModelConfig) -> dict[str, Any]:
        """Points the language encoder at tokenizer files copied beside the step dirs."""
        if isinstance(model_config, ModelConfig):
            config = model_config
        else:
            config = ModelConfig.from_dict(model_config)
        if config.language.encoder == "none" or config.language.checkpoint_dir == LANGUAGE_ASSETS:
            return config.to_dict()
        if jax.process_index() == 0 and not self._language_copied:
            copy_language_assets(config, self.directory)
            self._language_copied = True
        language = dataclasses.replace(config.language, checkpoint_dir=LANGUAGE_ASSETS)
        return dataclasses.replace(config, language=language).to_dict()

    # ------------------------------------------------------------------ restore
    def restore(self, step: int, abstract_train_state: Any) -> Any:
        """The train state of `step`, placed on the target's shardings, bit-exact.

        `abstract_train_state`: the train state's pytree with `jax.ShapeDtypeStruct` leaves
        carrying `.sharding` (or concrete arrays, whose shardings are used).
        """
        self.wait()
        if not self._is_complete(step):
            raise FileNotFoundError(
                f"no complete checkpoint for step {step} in {self.directory} "
                f"(complete steps: {self.all_steps()})"
            )
        target = jax.tree.map(_abstract_leaf, abstract_train_state)
        _check_target(self._manager.item_metadata(step)[TRAIN_STATE], target, step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{TRAIN_STATE: ocp.args.StandardRestore(target)})
        )
        return restored[TRAIN_STATE]

    # ------------------------------------------------------------------ lifecycle
    def wait(self) -> None:
        """Blocks until pending async saves are on disk (raises their errors)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _abstract_leaf(leaf: Any) -> jax.ShapeDtypeStruct:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        if leaf.sharding is None:
            raise ValueError(
                f"restore target leaf {leaf} has no sharding: build the abstract train state "
                "with jax.ShapeDtypeStruct(shape, dtype, sharding=...)"
            )
        return leaf
    if isinstance(leaf, jax.Array):
        return ocp.utils.to_shape_dtype_struct(leaf)
    raise TypeError(
        f"restore target leaves must be jax.ShapeDtypeStruct or jax.Array, got {leaf!r}"
    )


def _check_target(metadata: Any, target: Any, step: int) -> None:
    """Names every leaf whose path, shape or dtype differs between checkpoint and target."""
    if metadata is None:  # unreadable metadata: orbax's own checks still apply
        return
    saved = {
        m.name: m
        for m in jax.tree.leaves(getattr(metadata, "tree", metadata))
        if getattr(m, "name", None) is not None
    }
    names = jax.tree.leaves(ocp.tree.get_param_names(target, include_empty_nodes=False))
    wanted = dict(zip(names, jax.tree.leaves(target), strict=True))
    problems = [f"{n}: not in the checkpoint" for n in sorted(set(wanted) - set(saved))]
    problems += [
        f"{n}: in the checkpoint, not in the target" for n in sorted(set(saved) - set(wanted))
    ]
    for name in sorted(set(saved) & set(wanted)):
        have, want = saved[name], wanted[name]
        if tuple(have.shape) != tuple(want.shape) or np.dtype(have.dtype) != np.dtype(want.dtype):
            problems.append(
                f"{name}: checkpoint {np.dtype(have.dtype).name}{list(have.shape)}, "
                f"target {np.dtype(want.dtype).name}{list(want.shape)}"
            )
    if problems:
        shown = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
        raise ValueError(
            f"the train state saved at step {step} does not match the restore target "
            f"({len(problems)} problems):\n  {shown}"
        )


def _jsonable(value: Any, where: str) -> Any:
    """Numpy arrays/scalars -> lists/Python numbers; anything else non-JSON is an error."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray | np.generic | jax.Array):
        return np.asarray(value).tolist()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise TypeError(f"{where}: {type(value).__name__} is not JSON serializable")


# ---------------------------------------------------------------------- workdir
def check_workdir(
    workdir: str,
    config_json: Mapping[str, Any],
    *,
    overwrite: bool,
    ignore: tuple[str, ...] = (),
) -> str:
    """Makes `workdir` this run's: "new", "resume" (same config) or "overwritten".

    A different config in ``workdir/config.json`` is an error naming the differing keys,
    unless `overwrite`: then the whole old workdir is renamed (never deleted) to
    ``<workdir>.overwritten-<UTC time>`` and a fresh one started. The same config always
    resumes, even with `overwrite` (restarts of a preempted job must not wipe it).

    Top-level keys in `ignore` (how the run executes, e.g. a profiler window) may differ.
    Call on the main process only, then synchronize hosts: whether to resume is decided by
    `Checkpointer.latest_step`, which every process calls afterwards.
    """
    workdir = os.path.abspath(workdir)
    config = json.loads(json.dumps(_jsonable(config_json, "config")))
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            try:
                old = json.load(f)
            except json.JSONDecodeError as e:
                old = {"<unreadable config.json>": str(e)}
        differences = [
            d for d in _differences(old, config) if d.split(":")[0].split(".")[0] not in ignore
        ]
        if not differences:
            log.info("resuming the run in %s (same config)", workdir)
            return "resume"
        if not overwrite:
            shown = "; ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
            raise ValueError(
                f"{workdir} holds a run with a different config ({len(differences)} keys "
                f"differ: {shown}). Use a new workdir, or overwrite=True to move the old run "
                "aside and start over."
            )
        return _move_aside(workdir, config, f"{len(differences)} config keys differ")
    checkpoints = os.path.join(workdir, CHECKPOINT_SUBDIR)
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        if not overwrite:
            raise ValueError(
                f"{workdir} has checkpoints but no {CONFIG_FILE}: not a run this code started. "
                "Use a new workdir, or overwrite=True to move it aside."
            )
        return _move_aside(workdir, config, f"no {CONFIG_FILE}")
    os.makedirs(workdir, exist_ok=True)
    _write_json(path, config)
    log.info("new run in %s", workdir)
    return "new"


def _move_aside(workdir: str, config: dict, why: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    target, n = f"{workdir}.overwritten-{stamp}", 1
    while os.path.exists(target):
        target, n = f"{workdir}.overwritten-{stamp}-{n}", n + 1
    os.rename(workdir, target)
    log.warning("overwrite: moved the old run in %s (%s) to %s", workdir, why, target)
    os.makedirs(workdir)
    _write_json(os.path.join(workdir, CONFIG_FILE), config)
    return "overwritten"


def _write_json(path: str, value: Any) -> None:
    """Atomic: a crash leaves either no file or the whole file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as ``key: old -> new`` (sorted, recursive)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: {old[key]!r} -> (absent)")
            else:
                out.extend(_differences(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or '<root>'}: {old!r} -> {new!r}"]
