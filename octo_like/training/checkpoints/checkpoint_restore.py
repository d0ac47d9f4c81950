"""What restoring a training checkpoint checks: that the step is trusted, and that the target fits.

A step is trusted when its train state matches the checksum manifest written as its save finished
(`model.checkpoint_integrity`). `TrustedSteps` verifies each step once and moves a step that fails
(or has no manifest) aside, as ``<step>.corrupt-<time>`` or ``<step>.unverified-<time>``, never
deleted, so the previous trusted step is used. `abstract_leaf` makes each leaf of the restore
target a sharded `jax.ShapeDtypeStruct`, and `check_target` names every leaf whose path, shape or
dtype differs from what was saved. `checkpoint.Checkpointer` owns the orbax manager and calls these.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from octo_like import storage
from octo_like.model.checkpoint_integrity import (
    CHECKSUMS_FILE,
    CheckpointCorruptError,
    UntrustedCheckpointError,
    verify_checksums,
)
from octo_like.training.checkpoints.checkpoint_staging import StagedDirectory

log = logging.getLogger(__name__)


class TrustedSteps:
    """The trust of the steps under one checkpoint directory. Call every method on every
    process (setting a step aside synchronizes them; the primary renames it).

    `directory`: the checkpoints' home (a local path or a URL); `orbax_directory`: where orbax
    reads and writes them (the same, or the local copy of a `staged` one); `items`: the items
    whose files must match the manifest.
    """

    def __init__(
        self,
        manager: ocp.CheckpointManager,
        directory: str,
        orbax_directory: str,
        staged: StagedDirectory | None,
        items: tuple[str, ...],
    ):
        self._manager = manager
        self.directory = directory
        self._orbax_directory = orbax_directory
        self._staged = staged
        self._items = items
        self._verified: set[int] = set()  # steps whose items matched their checksums

    def newest(self, steps: list[int]) -> int | None:
        """The newest of `steps` (ascending) that verifies, or None; each newer one that does not
        is logged with what is wrong and moved aside."""
        for step in reversed(steps):
            try:
                self.verify(step)
            except CheckpointCorruptError as error:
                log.error("%s\nfalling back to the previous trusted checkpoint", error)
                self.set_aside(step, "corrupt")
                continue
            except UntrustedCheckpointError as error:
                log.error("%s\nfalling back to the previous trusted checkpoint", error)
                self.set_aside(step, "unverified")
                continue
            return step
        return None

    def verify(self, step: int) -> None:
        """Raises `UntrustedCheckpointError` unless the items of `step` match the manifest
        written when it was saved (`CheckpointCorruptError` for changed, truncated or missing
        files); a staged step is copied down first. Checked once per step."""
        if step in self._verified:
            return
        if self._staged is not None:
            self._staged.fetch(step)
        step_dir = storage.join(self._orbax_directory, str(step))
        if not verify_checksums(step_dir, self._items, warn_unverified=False):
            raise UntrustedCheckpointError(
                f"checkpoint {self.directory}/{step} has no checksum manifest "
                f"({CHECKSUMS_FILE}): it was not verified when it was saved (the process died "
                "between finishing the save and writing it, or an older version saved it). If "
                "you trust its bytes: python scripts/verify_checkpoint.py "
                f"{self.directory} --step {step} --write_missing"
            )
        self._verified.add(step)

    def set_aside(self, step: int, why: str) -> None:
        """Renames an untrusted step out of orbax's way (every process waits for the primary)."""
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"verified checkpoint {step}")
        if jax.process_index() == 0:
            name = f"{step}.{why}-{int(time.time())}"
            root = self.directory if self._staged is not None else self._orbax_directory
            storage.rename(storage.join(root, str(step)), storage.join(root, name))
            if self._staged is not None:
                storage.remove(storage.join(self._orbax_directory, str(step)))
            log.warning("moved the %s checkpoint %s/%d to %s", why, root, step, name)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._manager.reload()
        self._verified.discard(step)


def abstract_leaf(leaf: Any) -> jax.ShapeDtypeStruct:
    """A restore target leaf: a sharded `jax.ShapeDtypeStruct` as is, an array's own."""
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


def check_target(metadata: Any, target: Any, step: int) -> None:
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
