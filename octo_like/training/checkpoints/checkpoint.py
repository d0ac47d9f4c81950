"""Training checkpoints with automatic resume, and the workdir as the run's identity.

Layout (one orbax `CheckpointManager` rooted at ``workdir/checkpoints``)::

    workdir/config.json                   the run's config; a rerun with the same one resumes
    workdir/checkpoints/<step>/           train_state, params, config, dataset_statistics,
                                          input_spec (what `OctoModel.load_pretrained` reads)
    workdir/checkpoints/language_assets/  tokenizer files, so the directory is self-contained

Orbax writes each step into ``<step>.orbax-checkpoint-tmp-*`` and renames it when complete;
`Checkpointer.latest_step` additionally requires the finalization metadata and every item,
so an interrupted or half-copied step is never resumed from. The primary process writes
``<step>/checksums.json`` (`model.checkpoint_integrity`) as part of finishing the save: inside
orbax's finalization, before the step directory is committed (async saves), or right after
the save returns (synchronous ones). Orbax commits an async step after the manifest, filling in
the commit time of ``_CHECKPOINT_METADATA`` and writing ``commit_success.txt``: the manifest
checks those two by name (`checkpoint_integrity.COMMITTED_BY_ORBAX`), so every save path
verifies the same way. Only such steps are trusted: `resume_step` checks the train state's files
against the manifest (and that it lists every file of the step), and a step without one (a
process killed between commit and manifest) or whose files or restore fail is moved aside
(``<step>.corrupt-<time>`` or ``<step>.unverified-<time>``, never deleted) and the previous
trusted step is used (`checkpoint_restore.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from octo_like import storage
from octo_like.model.base_checkpoint import BASE_PARAMS, BaseReference
from octo_like.model.checkpoint_integrity import (
    check_finite,
    write_checksums,
)
from octo_like.model.checkpoint_layout import (
    FINALIZED_MARKER,
    LANGUAGE_ASSETS,
    MODEL_ITEMS,
    copy_language_assets,
    handler_registry,
    model_items,
    quiet_orbax,
)
from octo_like.model.config import ModelConfig
from octo_like.training.checkpoints.checkpoint_restore import (
    TrustedSteps,
    abstract_leaf,
    check_target,
)
from octo_like.training.checkpoints.checkpoint_staging import StagedDirectory
from octo_like.training.checkpoints.workdir import (
    CHECKPOINT_SUBDIR,
    CONFIG_FILE,
    check_workdir,
    jsonable,
)

__all__ = [
    "CHECKPOINT_SUBDIR",
    "CONFIG_FILE",
    "CheckpointConfig",
    "Checkpointer",
    "check_workdir",
]

log = logging.getLogger(__name__)

TRAIN_STATE = "train_state"
# The model's items (what `OctoModel.load_pretrained` reads), plus the train state.
ITEMS = (TRAIN_STATE, *MODEL_ITEMS)


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (e.g. a full disk); earlier steps are untouched."""


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
    every process (orbax synchronizes hosts and writes JSON items from the primary only).

    `checkpoint_dir`: a local path or a URL. Orbax writes local and ``gs://`` directories
    itself; other schemes go through a local staging directory (`checkpoint_staging.py`).
    """

    def __init__(self, checkpoint_dir: str, config: CheckpointConfig):
        self.directory = storage.absolute(checkpoint_dir)
        self.config = config
        self._saving: int | None = None  # the step of the save in flight
        self._staged: StagedDirectory | None = None
        orbax_directory = self.directory
        if not storage.orbax_native(self.directory):
            self._staged = StagedDirectory(
                self.directory,
                keep_last=config.keep_last,
                keep_every=config.keep_every,
                is_complete=_complete,
            )
            orbax_directory = self._staged.local
        policies = [ocp.checkpoint_managers.LatestN(config.keep_last)]
        if config.keep_every is not None:
            policies.append(ocp.checkpoint_managers.EveryNSteps(config.keep_every))
        options = ocp.CheckpointManagerOptions(
            # Preemption saves are forced by the loop (training/run/preemption.py), which owns
            # the hosts' preemption sync point.
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(config.save_every),
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=config.async_save,
            cleanup_tmp_directories=True,  # leftovers of interrupted saves
            create=True,
            # The manifest is written before orbax commits the step, so a finalized step
            # always has one (sync saves write it in `save`, orbax allows no callback there);
            # what orbax writes at the commit is checked by name (COMMITTED_BY_ORBAX).
            async_options=ocp.AsyncOptions(post_finalization_callback=self._manifest_in_flight)
            if config.async_save
            else None,
        )
        # BASE_PARAMS: optional (see base_checkpoint.py)
        registry = handler_registry((*ITEMS, BASE_PARAMS))
        # What this holds besides orbax's manager, released last: the staging directory, then
        # the filter of orbax's expected notices (on while this is open).
        self._held = contextlib.ExitStack()
        self._held.enter_context(quiet_orbax())
        if self._staged is not None:
            self._held.callback(self._staged.close)
        try:
            self._manager = ocp.CheckpointManager(
                orbax_directory, options=options, handler_registry=registry
            )
        except BaseException:  # nothing this opened outlives the failure
            self._held.close()
            raise
        self._orbax_directory = orbax_directory
        self._language_copied = False
        self._trust = TrustedSteps(
            self._manager, self.directory, orbax_directory, self._staged, (TRAIN_STATE,)
        )
        self._closed = False

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        """Steps of complete training checkpoints, ascending (waits for pending saves)."""
        self.wait()
        if self._staged is not None:
            return self._staged.remote_steps()
        self._manager.reload()
        return [s for s in sorted(self._manager.all_steps()) if self._is_complete(s)]

    def latest_step(self) -> int | None:
        """The newest complete training checkpoint, or None for a fresh run."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def resume_step(self) -> int | None:
        """The newest complete step saved with a checksum manifest that its train state
        matches, or None.

        A corrupt step (changed, truncated or missing files) or one without a manifest is
        logged with what is wrong, moved aside and the previous step is tried.
        """
        return self._trust.newest(self.all_steps())

    def restore_trusted(self, step: int, abstract_train_state: Any) -> tuple[int, Any]:
        """(step, train state) of `step`, or of the newest older trusted step when restoring
        `step` fails for any reason (it is moved aside); (0, None) when none restores."""
        while step:
            try:
                return step, self.restore(step, abstract_train_state)
            except Exception as error:  # whatever broke, an older trusted step may not be
                log.error(
                    "restoring checkpoint %s/%d failed (%s: %s)\nfalling back to the previous "
                    "trusted checkpoint",
                    self.directory, step, type(error).__name__, error,
                )  # fmt: skip
                self._trust.set_aside(step, "corrupt")
                step = self.resume_step() or 0
        return 0, None

    def should_save(self, step: int) -> bool:
        """True at multiples of `save_every` for a step not yet saved."""
        return self._manager.should_save(step)

    def _is_complete(self, step: int) -> bool:
        """Whether orbax's copy of `step` (local, staged, or gs://) is complete."""
        return _complete(self._orbax_directory, step)

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
            jsonable(dataset_statistics, "stats"),
            jsonable(input_spec, "input_spec"),
            base_params,
        )
        args = ocp.args.Composite(**{TRAIN_STATE: ocp.args.StandardSave(train_state), **items})
        self._finish_pending()  # the previous save's manifest names its step
        self._saving = step
        try:
            saved = self._manager.save(step, args=args, force=True)
        except Exception as error:
            raise self._save_failure(step, error) from error
        if saved and not self.config.async_save:
            self._write_manifest(storage.join(self._orbax_directory, str(step)), step)
        if self._staged is not None:  # the previous (finished) save is copied up
            self._staged.publish()
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
            copy_language_assets(config, self._orbax_directory)
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
        if self._staged is not None and step in self._staged.remote_steps():
            self._staged.fetch(step)
            self._manager.reload()
        if not self._is_complete(step):
            raise FileNotFoundError(
                f"no complete checkpoint for step {step} in {self.directory} "
                f"(complete steps: {self.all_steps()})"
            )
        self._trust.verify(step)
        target = jax.tree.map(abstract_leaf, abstract_train_state)
        check_target(self._manager.item_metadata(step)[TRAIN_STATE], target, step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{TRAIN_STATE: ocp.args.StandardRestore(target)})
        )[TRAIN_STATE]
        check_finite(restored, f"checkpoint {self.directory}/{step} ({TRAIN_STATE})")
        return restored

    # ------------------------------------------------------------------ lifecycle
    def wait(self) -> None:
        """Blocks until pending async saves are on disk (raises their errors); staged
        checkpoints are then copied to their remote directory."""
        self._finish_pending()
        if self._staged is not None:
            self._staged.publish()

    def _finish_pending(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # the async save's own error, named
            raise self._save_failure(self._saving, error) from error

    def _save_failure(self, step: int | None, error: Exception) -> CheckpointSaveError:
        """`error` of saving `step`, with the disk's state and what is still safe."""
        text = f"{type(error).__name__}: {error}"
        where = f"{self.directory}/{step}"
        try:
            done = [s for s in self._manager.all_steps() if self._is_complete(s)]
        except Exception:  # a listing failure must not hide the save's own error
            done = "unknown"
        if "No space left on device" in text or "os_error_code='28'" in text:
            free = ""
            if not storage.has_scheme(self._orbax_directory):
                usage = shutil.disk_usage(self._orbax_directory)
                free = f" ({usage.free / 2**20:.0f} MiB free of {usage.total / 2**30:.1f} GiB)"
            return CheckpointSaveError(
                f"saving checkpoint {where} failed: the disk is full{free}. The steps saved "
                f"before are intact ({done}); free space (or move the workdir to a larger "
                "disk), then rerun the same command to resume from the newest of them"
            )
        first_line = text.splitlines()[0][:500]
        return CheckpointSaveError(
            f"saving checkpoint {where} failed ({first_line}); the steps saved before are "
            f"intact ({done})"
        )

    def _manifest_in_flight(self) -> None:
        """Orbax's post-finalization callback (async thread, every process): the manifest of
        the step being saved, written into its directory before orbax commits it."""
        step = self._saving
        if step is None or jax.process_index() != 0:
            return
        prefix = f"{step}.orbax-checkpoint-tmp"
        pending = [n for n in storage.listdir(self._orbax_directory) if n.startswith(prefix)]
        name = sorted(pending)[-1] if pending else str(step)  # object stores: no tmp rename
        self._write_manifest(storage.join(self._orbax_directory, name), step)

    def _write_manifest(self, step_dir: str, step: int) -> None:
        if jax.process_index() != 0:
            return
        count = write_checksums(step_dir)
        log.info("wrote checksums of %d files for checkpoint step %d", count, step)

    def close(self) -> None:
        """Waits for the last save, then releases everything this holds (orbax's threads, the
        staging directory, the notice filter on the absl logger), each even when the last save
        or another release failed; the save's own error is the one raised. Closing again does
        nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        except BaseException:
            self._release(save_failed=True)
            raise
        self._release(save_failed=False)

    def _release(self, *, save_failed: bool) -> None:
        with self._held:  # released even when closing orbax's manager fails
            try:
                self._manager.close()
            except Exception:
                if not save_failed:
                    raise
                # orbax's close waits again, re-raising the failure `wait` already named
                log.debug("closing orbax's manager after a failed save", exc_info=True)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _complete(root: str, step: int) -> bool:
    """Every item directory and orbax's finalization marker exist under ``root/step``."""
    path = storage.join(root, str(step))
    present = set(storage.listdir(path))
    missing = [name for name in ITEMS if name not in present]
    if FINALIZED_MARKER not in present:
        missing.append(FINALIZED_MARKER)
    if missing:
        log.warning("ignoring incomplete checkpoint %s (missing %s)", path, missing)
    return not missing
