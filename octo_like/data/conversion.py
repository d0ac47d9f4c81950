"""What every converter into RLDS shares: the target check, the report of bad episodes, the
seeded train/val split, the write and the summary.

A converter (episode files: `raw_episodes`; LeRobot directories: `octo_like.data.lerobot`)
first scans its whole source into a `Scan` (every episode checked, each problem kept under
the episode's label), so one run names every bad episode before anything is written; then
`write_scanned` splits the good labels and streams their episodes through `write_episodes`.
TFDS writes into a temporary folder and renames it at the end, so a run that fails or is
killed midway leaves no folder that a later run or reader takes for a complete dataset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from octo_like.data.episode_files import EpisodeError
from octo_like.data.rlds_writer import RldsSchema, write_episodes

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Scan:
    """What the validation pass learnt about a source, by episode label (a file path, or a
    LeRobot episode's name)."""

    schema: RldsSchema | None = None
    cameras: list[str] = dataclasses.field(default_factory=list)
    has_state: bool = False
    first: str = ""  # the label the schema was taken from
    lengths: dict[str, int] = dataclasses.field(default_factory=dict)
    bad: dict[str, str] = dataclasses.field(default_factory=dict)
    actions: list[np.ndarray] = dataclasses.field(default_factory=list)
    instructions: set[str] = dataclasses.field(default_factory=set)
    ignored_keys: tuple[str, ...] = ()
    notes: list[str] = dataclasses.field(default_factory=list)  # extra summary lines
    unit: str = "episode(s)"  # what a label names, in messages: "file(s)" for episode files

    @property
    def good(self) -> list[str]:
        return list(self.lengths)


def check_target(out_dir: str, name: str, version: str, overwrite: bool) -> str:
    """``out_dir/name/version`` after checking the name and that no complete dataset is there
    (unless `overwrite`); nothing is written."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"dataset name {name!r}: use lower-case letters, digits and '_'")
    target = os.path.join(out_dir, name, version)
    if os.path.exists(os.path.join(target, "dataset_info.json")) and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass --overwrite (overwrite=True) to replace it"
        )
    return target


def refuse_bad(scan: Scan, source: str, total: int, skip_bad: bool, what: str) -> None:
    """Raises an `EpisodeError` listing every bad episode, unless `skip_bad` (then a warning);
    also when no episode is left, saying how many were skipped and why."""
    listing = "\n".join(f"  {label}: {problem}" for label, problem in scan.bad.items())
    if scan.bad and not skip_bad:
        raise EpisodeError(
            source,
            f"{len(scan.bad)} of {total} {what} are invalid "
            f"(fix them, or skip them with skip_bad=True / --skip_bad):\n{listing}",
        )
    if scan.schema is None or not scan.lengths:
        raise EpisodeError(
            source,
            f"no valid {what} to convert: all {total} are invalid"
            + (f":\n{listing}" if total else ""),
        )
    if scan.bad:
        log.warning("skipping %d bad %s:\n%s", len(scan.bad), what, listing)


def split_episodes(
    labels: Sequence[str], val_fraction: float, seed: int = 0
) -> dict[str, list[str]]:
    """A seeded random ``{"train": [...], "val": [...]}``; each keeps the input order.

    ``round(val_fraction * n)`` episodes go to val (at least one when the fraction is positive
    and there are two or more); train always keeps at least one. No "val" key when it is empty.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    count = len(labels)
    num_val = round(val_fraction * count)
    if val_fraction > 0 and count >= 2:
        num_val = max(num_val, 1)
    num_val = min(num_val, count - 1) if count else 0
    chosen = set(np.random.default_rng(seed).permutation(count)[:num_val].tolist())
    splits = {"train": [f for i, f in enumerate(labels) if i not in chosen]}
    if num_val:
        splits["val"] = [f for i, f in enumerate(labels) if i in chosen]
    return splits


def write_scanned(
    scan: Scan,
    out_dir: str,
    name: str,
    episodes: Callable[[list[str]], Iterable[dict[str, Any]]],
    *,
    source: str,
    val_fraction: float,
    seed: int,
    version: str,
    overwrite: bool,
    description: str,
    metadata: Mapping[str, Any] | None = None,
    verbose: bool = True,
) -> str:
    """Splits `scan`'s good labels, writes each split's episodes (`episodes(labels)` yields
    their column dicts, see `rlds_writer`) and returns the dataset directory. An episode the
    generator leaves out (a late problem, with skip_bad) must be added to ``scan.bad``; the
    summary then counts it."""
    from octo_like.data.raw_episodes import suggest_dataset_spec

    splits = split_episodes(scan.good, val_fraction, seed)
    path = write_episodes(
        out_dir,
        name,
        scan.schema,
        {split: (lambda labels=labels: episodes(labels)) for split, labels in splits.items()},
        version=version,
        description=description,
        overwrite=overwrite,
        metadata=metadata,
    )
    if verbose:
        written = {
            s: [label for label in labels if label not in scan.bad] for s, labels in splits.items()
        }
        actions = np.concatenate(scan.actions)
        spec = suggest_dataset_spec(name, scan.cameras, has_state=scan.has_state, actions=actions)
        print(summary(path, source, scan, written, spec))
    return path


def summary(path: str, source: str, scan: Scan, splits, spec: Mapping[str, Any]) -> str:
    """What a conversion wrote and skipped, then the suggested spec (printed by converters)."""
    written = [label for labels in splits.values() for label in labels]
    total = sum(scan.lengths[label] for label in written)
    lines = [f"converted {len(written)} episodes ({total} steps) from {source}"]
    lines.append(f"  into {path}")
    for split, labels in splits.items():
        steps = sum(scan.lengths[label] for label in labels)
        lines.append(f"  {split}: {len(labels)} episodes, {steps} steps")
    for key, feature in scan.schema.observation.items():
        kind = f" ({feature.encoding})" if feature.kind == "image" else ""
        lines.append(f"  observation/{key}: {feature.dtype}{list(feature.shape)}{kind}")
    lines.append(f"  action: float32{list(scan.schema.step['action'].shape)}")
    lines.append(f"  distinct instructions: {len(scan.instructions - {''})}")
    lines += [f"  {note}" for note in scan.notes]
    if scan.ignored_keys:
        lines.append(f"  ignored keys (not in the layout): {list(scan.ignored_keys)}")
    if scan.bad:
        lines.append(f"  SKIPPED {len(scan.bad)} bad {scan.unit}:")
        lines += [f"    {label}: {problem}" for label, problem in scan.bad.items()]
    lines.append("suggested DatasetSpec (check it, then put it in config.data.extra_specs):")
    lines.append(spec_json(spec))
    return "\n".join(lines)


def spec_json(spec: Mapping[str, Any]) -> str:
    """A spec dict as JSON with one line per field (readable, and valid JSON)."""
    fields = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in spec.items()]
    return "{\n" + ",\n".join(fields) + "\n}"
