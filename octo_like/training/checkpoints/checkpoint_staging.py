"""Checkpoints on filesystems orbax cannot write directly, through a local staging directory.

Orbax (TensorStore) writes arrays to local paths and ``gs://`` only. For any other URL scheme
that `octo_like.storage` reaches (``s3://`` through tf.io.gfile plugins or fsspec, ``hdfs://``,
an in-memory filesystem in tests), the checkpointer saves into a local scratch directory and
this module mirrors it: each finalized step is copied up with its finalization marker last
(a half-copied step is never taken for complete), a step to restore is copied down, and the
remote directory keeps what the preservation policy says (the last `keep_last` steps plus
multiples of `keep_every`). One process only: orbax's multi-host saves need a directory every
host shares, which a per-host scratch directory is not.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable

import jax

from octo_like import storage
from octo_like.model.checkpoint_layout import FINALIZED_MARKER, LANGUAGE_ASSETS

log = logging.getLogger(__name__)

STAGING_PREFIX = "octo_like-checkpoint-staging-"  # then the owner's pid, then a random part


def remove_stale_staging(temp_dir: str) -> list[str]:
    """Deletes staging directories whose process is gone (a run killed before `close`: each
    holds a copy of its last steps); returns them. One without a pid in its name (written
    before pids were) is only named, with its size, since its owner cannot be told."""
    removed = []
    for name in sorted(os.listdir(temp_dir)):
        path = os.path.join(temp_dir, name)
        if not name.startswith(STAGING_PREFIX) or not os.path.isdir(path):
            continue
        pid = name[len(STAGING_PREFIX) :].split("-")[0]
        if not pid.isdigit():
            size = sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())
            log.warning(
                "%s: a checkpoint staging directory of an earlier run (%.0f MB); delete it if "
                "no run of this machine is using it", path, size / 2**20,
            )  # fmt: skip
            continue
        if _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s: the staging directory of a run that ended without closing", path)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class StagedDirectory:
    """A local scratch directory for orbax mirrored to `remote` (a URL).

    `is_complete(root, step)`: whether the step directory under `root` is a complete
    checkpoint. Orbax's `FINALIZED_MARKER`, written last, is also uploaded last.
    """

    def __init__(
        self,
        remote: str,
        *,
        keep_last: int,
        keep_every: int | None,
        is_complete: Callable[[str, int], bool],
    ):
        if jax.process_count() > 1:
            raise ValueError(
                f"checkpoints in {remote}: orbax writes {storage.ORBAX_SCHEMES} URLs and local "
                "paths directly; other schemes are staged through a local directory, which "
                f"only a single process can do ({jax.process_count()} processes here). Use a "
                "gs:// workdir or a filesystem every host mounts."
            )
        self.remote = remote
        remove_stale_staging(tempfile.gettempdir())
        self.local = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-")
        self._keep_last = keep_last
        self._keep_every = keep_every
        self._is_complete = is_complete
        log.info("checkpoints for %s are staged in %s and copied up when final", remote, self.local)

    def remote_steps(self) -> list[int]:
        """Complete steps in the remote directory, ascending."""
        steps = sorted(int(n) for n in storage.listdir(self.remote) if n.isdigit())
        return [s for s in steps if self._is_complete(self.remote, s)]

    def fetch(self, step: int) -> None:
        """Copies a remote step (and the language assets its manifest covers) down unless the
        staging directory already has them."""
        assets = storage.join(self.local, LANGUAGE_ASSETS)
        remote_assets = storage.join(self.remote, LANGUAGE_ASSETS)
        if not storage.isdir(assets) and storage.isdir(remote_assets):
            storage.copy_tree(remote_assets, assets)
        if self._is_complete(self.local, step):
            return
        target = storage.join(self.local, str(step))
        shutil.rmtree(target, ignore_errors=True)
        count = storage.copy_tree(storage.join(self.remote, str(step)), target)
        log.info("fetched checkpoint step %d from %s (%d files)", step, self.remote, count)

    def publish(self) -> None:
        """Copies finalized local steps (and language assets) up, then prunes the remote."""
        assets = storage.join(self.local, LANGUAGE_ASSETS)
        if storage.isdir(assets) and not storage.isdir(storage.join(self.remote, LANGUAGE_ASSETS)):
            storage.copy_tree(assets, storage.join(self.remote, LANGUAGE_ASSETS))
        remote = set(self.remote_steps())
        local = sorted(int(n) for n in storage.listdir(self.local) if n.isdigit())
        for step in local:
            if step in remote or not self._is_complete(self.local, step):
                continue
            self._upload(step)
            remote.add(step)
        self._prune(sorted(remote))

    def _upload(self, step: int) -> None:
        source, target = storage.join(self.local, str(step)), storage.join(self.remote, str(step))
        storage.remove(target)  # leftovers of an interrupted upload
        files = list(storage.walk_files(source))
        for relative in sorted(files, key=lambda f: f == FINALIZED_MARKER):  # marker last
            storage.copy_file(storage.join(source, relative), storage.join(target, relative))
        log.info("copied checkpoint step %d to %s (%d files)", step, self.remote, len(files))

    def _prune(self, steps: list[int]) -> None:
        keep = set(steps[-self._keep_last :])
        if self._keep_every:
            keep |= {s for s in steps if s % self._keep_every == 0}
        for step in steps:
            if step not in keep:
                storage.remove(storage.join(self.remote, str(step)))
                log.info(
                    "removed checkpoint step %d from %s (preservation policy)", step, self.remote
                )

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)
