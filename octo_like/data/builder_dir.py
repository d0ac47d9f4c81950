"""Opening a prepared TFDS dataset directory, its metadata checked against its shard files.

A builder comes from a directory holding ``dataset_info.json`` (local or ``gs://``) or from
``name[:version]`` under a data root. Its metadata (dataset_info.json, features.json) and the
shard files it lists are checked before anything is read, so that a truncated, missing or
unlisted file is named with its dataset instead of surfacing as a raw JSON or TFDS error, or as
episodes ignored without a word. Reading the episodes is `rlds.py`'s part.
"""

from __future__ import annotations

import difflib
import json
import os
import posixpath
import re

import tensorflow as tf
import tensorflow_datasets as tfds

from octo_like.data.splits import split_names
from octo_like.data.validation import DataError
from octo_like.storage import retry_transient


class DatasetMetadataError(DataError):
    """A prepared dataset's metadata (dataset_info.json, features.json) is missing or broken."""


def open_builder(source: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """A TFDS builder from a prepared directory or from ``name[:version]`` under `data_dir`.

    `source` is a directory holding ``dataset_info.json`` (local or ``gs://``, read through
    tf.io.gfile), or a dataset name with `data_dir` the TFDS data root.
    """
    if _exists(tf.io.gfile.join(source, "dataset_info.json")):
        return _from_directory(source)
    if data_dir is None:
        raise FileNotFoundError(
            f"{source!r} is not a prepared TFDS directory (no dataset_info.json) and no "
            "data_dir was given to look it up by name"
        )
    name, _, version = source.partition(":")
    root = tf.io.gfile.join(data_dir, name)
    if not _isdir(root):
        present = _listdir(data_dir) if _isdir(data_dir) else []
        present = [p.rstrip("/") for p in present]
        close = difflib.get_close_matches(name, present, n=3)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise FileNotFoundError(f"dataset {name!r} not found under {data_dir!r}{hint}")
    if not version:
        versions = sorted(
            (v.rstrip("/") for v in _listdir(root)),
            key=lambda v: tuple(int(p) if p.isdigit() else -1 for p in v.split(".")),
        )
        complete = [v for v in versions if _exists(tf.io.gfile.join(root, v, "dataset_info.json"))]
        if not complete:
            raise FileNotFoundError(f"no prepared version of {name!r} under {root!r}")
        version = complete[-1]
    return _from_directory(tf.io.gfile.join(root, version))


def open_source(location: str, name: str) -> tfds.core.DatasetBuilder:
    """`location` is either the prepared directory of `name` or a data root holding it."""
    if _exists(tf.io.gfile.join(location, "dataset_info.json")):
        return _from_directory(location)
    return open_builder(name, data_dir=location)


def check_shard_files(builder: tfds.core.DatasetBuilder, split: str, paths: list[str]) -> None:
    """Refuses a split (each named split of a union or ``all``) whose dataset_info.json lists no
    shard, a shard file of the split that it does not list (its episodes would be ignored
    without a word), or a listed shard (`paths`: those this process reads) that is missing: one
    listing per directory, not a stat per file (an OXE dataset on gs:// has hundreds of
    shards)."""
    bases = split_names(builder, split)
    listed = {b: [os.fspath(p) for p in builder.info.splits[b].filepaths] for b in bases}
    every = [p for files in listed.values() for p in files]
    present = {}
    directories = {posixpath.dirname(p) for p in paths + every} | {os.fspath(builder.data_dir)}
    for directory in directories:
        present[directory] = (
            {n.rstrip("/") for n in _listdir(directory)} if _isdir(directory) else set()
        )
    for base in bases:
        _check_listed(builder, base, listed[base], present)
    missing = [p for p in paths if posixpath.basename(p) not in present[posixpath.dirname(p)]]
    if missing:  # read lazily, a missing shard would leave a repeated dataset empty: a spin
        raise DatasetMetadataError(
            f"dataset {builder.info.name!r}: {len(missing)} shard file(s) that dataset_info.json "
            f"lists are missing, e.g. {missing[0]}; copy the dataset again (every shard with its "
            "metadata)"
        )


def _check_listed(builder, base: str, listed: list[str], present: dict[str, set[str]]) -> None:
    """Split `base`: no shard file in the listed `present` directories that dataset_info.json
    does not list, and at least one listed shard holding episodes."""
    name = builder.info.name
    info_path = tf.io.gfile.join(os.fspath(builder.data_dir), "dataset_info.json")
    # TFDS's default shard names: <name>-<split>.<format>-00000-of-00004
    shard_name = re.compile(rf"{re.escape(name)}-{re.escape(base)}\.\w+-\d+-of-\d+")
    known = {posixpath.basename(p) for p in listed}
    unlisted = sorted(
        posixpath.join(directory, n)
        for directory, names in present.items()
        for n in names
        if shard_name.fullmatch(n) and n not in known
    )
    if unlisted:
        raise DatasetMetadataError(
            f"dataset {name!r}: {len(unlisted)} shard file(s) of split {base!r} are not listed "
            f"in {info_path} ({len(listed)} listed), e.g. {unlisted[0]}: their episodes would be "
            "ignored. Prepare the dataset again so that dataset_info.json lists every shard, or "
            "move the file(s) out of the folder if they are left over from an older version"
        )
    if not listed or sum(builder.info.splits[base].shard_lengths) == 0:
        raise DatasetMetadataError(
            f"dataset {name!r}: {info_path} lists no shard (0 episodes) for split {base!r}: "
            "nothing to read; prepare the dataset again, or copy its dataset_info.json with "
            "its shards"
        )


def _from_directory(directory: str) -> tfds.core.DatasetBuilder:
    """`tfds.builder_from_directory`, after checking the metadata files it reads, so that a
    truncated dataset_info.json or a missing features.json is named with its dataset (the
    directory ``<name>/<version>``) instead of surfacing as a JSONDecodeError or a misleading
    TFDS error."""
    directory = directory.rstrip("/")
    name = posixpath.basename(posixpath.dirname(directory)) or directory
    info_path = tf.io.gfile.join(directory, "dataset_info.json")
    info = _load_json(info_path, name)
    features_path = tf.io.gfile.join(directory, "features.json")
    if _exists(features_path):
        _load_json(features_path, name)
    elif "features" not in info:  # old datasets keep their features in dataset_info.json
        raise DatasetMetadataError(
            f"dataset {name!r}: {features_path} is missing (it describes the features every "
            "record holds); copy it with the dataset's shards"
        )
    try:
        return retry_transient(lambda: tfds.builder_from_directory(directory), directory)
    except Exception as error:  # noqa: BLE001  (TFDS raises many kinds; named here)
        raise DatasetMetadataError(
            f"dataset {name!r}: cannot open the prepared dataset in {directory} "
            f"({type(error).__name__}: {error})"
        ) from error


def _load_json(path: str, name: str) -> dict:
    if not _exists(path):
        raise DatasetMetadataError(f"dataset {name!r}: {path} is missing")
    text = _read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetMetadataError(
            f"dataset {name!r}: {path} is not valid JSON ({error}; {len(text)} bytes): it is "
            "truncated or corrupt, copy it again or prepare the dataset again"
        ) from error
    if not isinstance(value, dict):
        raise DatasetMetadataError(f"dataset {name!r}: {path} holds no JSON object")
    return value


# Metadata reads and listings are retried on transient errors of URL filesystems (gs://...).
def _exists(path: str) -> bool:
    return retry_transient(lambda: tf.io.gfile.exists(path), path)


def _isdir(path: str) -> bool:
    return retry_transient(lambda: tf.io.gfile.isdir(path), path)


def _listdir(path: str) -> list[str]:
    return retry_transient(lambda: tf.io.gfile.listdir(path), path)


def _read_text(path: str) -> str:
    def read():
        with tf.io.gfile.GFile(path, "r") as file:
            return file.read()

    return retry_transient(read, path)
