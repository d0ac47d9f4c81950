"""The workdir as the run's identity: same config resumes, another is refused or moved aside.

Works for local paths and URLs (``gs://bucket/run``) alike, through `octo_like.storage`.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from octo_like import storage

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"


def check_workdir(
    workdir: str,
    config_json: Mapping[str, Any],
    *,
    overwrite: bool,
    ignore: tuple[str, ...] = (),
    write_config: bool = True,
) -> str:
    """Makes `workdir` this run's: "new", "resume" (same config) or "overwritten".

    A different config in ``workdir/config.json`` is an error naming the differing keys,
    unless `overwrite`: then the whole old workdir is renamed (never deleted) to
    ``<workdir>.overwritten-<UTC time>`` and a fresh one started. The same config always
    resumes, even with `overwrite` (restarts of a preempted job must not wipe it).

    Keys in `ignore` (dotted paths, a key and everything under it: how the run executes or
    how long, e.g. a profiler window, ``num_steps``, ``checkpoint.save_every``) may differ;
    the new values are then written to ``config.json``.
    `write_config=False` leaves writing ``config.json`` of a new run to `write_run_config`,
    called once the run is known to start (a config that fails later validation must not
    claim the workdir).
    Call on the main process only, then synchronize hosts: whether to resume is decided by
    `Checkpointer.latest_step`, which every process calls afterwards.
    """
    workdir = storage.absolute(workdir)
    config = json.loads(json.dumps(jsonable(config_json, "config")))
    path = storage.join(workdir, CONFIG_FILE)
    if storage.exists(path):
        try:
            old = json.loads(storage.read_text(path))
        except json.JSONDecodeError as e:
            old = {"<unreadable config.json>": str(e)}
        found = _differences(old, config)
        differences = [d for d in found if not _ignored(d.split(":")[0], ignore)]
        if not differences:
            retuned = [d for d in found if d not in differences]
            if retuned:  # config.json records what the run does from now on
                log.info("resuming the run in %s with: %s", workdir, "; ".join(retuned))
                write_json(path, config)
            else:
                log.info("resuming the run in %s (same config)", workdir)
            return "resume"
        if not overwrite:
            shown = "; ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
            raise ValueError(
                f"{workdir} holds a run with a different config ({len(differences)} keys "
                f"differ: {shown}). Use a new workdir, or --overwrite (overwrite=True from "
                "Python) to move the old run aside and start over."
            )
        return _move_aside(workdir, config, f"{len(differences)} config keys differ", write_config)
    if storage.listdir(storage.join(workdir, CHECKPOINT_SUBDIR)):
        if not overwrite:
            raise ValueError(
                f"{workdir} has checkpoints but no {CONFIG_FILE}: not a run this code started. "
                "Use a new workdir, or --overwrite (overwrite=True from Python) to move it aside."
            )
        return _move_aside(workdir, config, f"no {CONFIG_FILE}", write_config)
    storage.makedirs(workdir)
    if write_config:
        write_json(path, config)
    log.info("new run in %s", workdir)
    return "new"


def recorded_num_steps(workdir: str) -> int | None:
    """num_steps of the run recorded in ``workdir/config.json`` (None: none, or unreadable;
    `check_workdir` names a broken file)."""
    path = storage.join(storage.absolute(workdir), CONFIG_FILE)
    if not storage.exists(path):
        return None
    try:
        value = json.loads(storage.read_text(path)).get("num_steps")
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def write_run_config(workdir: str, config_json: Mapping[str, Any]) -> bool:
    """Writes ``workdir/config.json`` unless present; returns whether it wrote it."""
    path = storage.join(storage.absolute(workdir), CONFIG_FILE)
    if storage.exists(path):
        return False
    write_json(path, json.loads(json.dumps(jsonable(config_json, "config"))))
    return True


def _move_aside(workdir: str, config: dict, why: str, write_config: bool) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    target, n = f"{workdir}.overwritten-{stamp}", 1
    while storage.exists(target):
        target, n = f"{workdir}.overwritten-{stamp}-{n}", n + 1
    storage.rename(workdir, target)
    log.warning("overwrite: moved the old run in %s (%s) to %s", workdir, why, target)
    storage.makedirs(workdir)
    if write_config:
        write_json(storage.join(workdir, CONFIG_FILE), config)
    return "overwritten"


def write_json(path: str, value: Any) -> None:
    """Atomic: a crash leaves either no file or the whole file."""
    storage.write_text(path, json.dumps(value, indent=2, sort_keys=True))


def jsonable(value: Any, where: str) -> Any:
    """Numpy arrays/scalars -> lists/Python numbers; anything else non-JSON is an error."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray | np.generic | jax.Array):
        return np.asarray(value).tolist()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise TypeError(f"{where}: {type(value).__name__} is not JSON serializable")


def _ignored(key: str, ignore: tuple[str, ...]) -> bool:
    return any(key == path or key.startswith(path + ".") for path in ignore)


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
