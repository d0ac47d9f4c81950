"""Write episodes held in memory as an RLDS dataset in TFDS format (no builder module needed).

Used by the synthetic test data, the MetaWorld demonstration collector and the raw-episode
converter in ``data/``. An episode is a dict of columns with a leading time axis::

    {"steps": {"observation": {key: [T, ...]}, "action": [T, A], "language_instruction": [T],
               "is_first": bool[T], ...},
     "episode_metadata": {key: value}}

`RldsSchema` declares the feature types; `write_episodes` streams the episodes of each split
through a generated `GeneratorBasedBuilder`, so readers open the result with
``tfds.builder_from_directory`` like any downloaded OXE dataset.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

STEP_FLAGS = ("is_first", "is_last", "is_terminal")
STEP_VALUES = ("reward", "discount")


@dataclasses.dataclass(frozen=True)
class Feature:
    """One RLDS feature: kind is 'image', 'tensor', 'text' or 'scalar'."""

    kind: str
    shape: tuple[int, ...] = ()
    dtype: str = "float32"
    encoding: str = "jpeg"

    def to_tfds(self) -> tfds.features.FeatureConnector:
        if self.kind == "image":
            return tfds.features.Image(
                shape=self.shape, dtype=np.uint8, encoding_format=self.encoding
            )
        if self.kind == "tensor":
            return tfds.features.Tensor(shape=self.shape, dtype=np.dtype(self.dtype))
        if self.kind == "text":
            return tfds.features.Text()
        if self.kind == "scalar":
            return tfds.features.Scalar(dtype=np.dtype(self.dtype))
        raise ValueError(f"unknown feature kind {self.kind!r}")


def image(height: int, width: int, channels: int = 3, encoding: str = "jpeg") -> Feature:
    return Feature("image", (height, width, channels), "uint8", encoding)


def tensor(shape: tuple[int, ...], dtype: str = "float32") -> Feature:
    return Feature("tensor", tuple(shape), dtype)


def text() -> Feature:
    return Feature("text", (), "string")


def scalar(dtype: str = "float32") -> Feature:
    return Feature("scalar", (), dtype)


def _default_step_features() -> dict[str, Feature]:
    return {"action": tensor((7,)), "language_instruction": text()}


@dataclasses.dataclass(frozen=True)
class RldsSchema:
    """Feature names and shapes of one RLDS dataset.

    `observation` lives under ``steps/observation``; `step` holds the other per-step features
    (``is_first``, ``is_last``, ``is_terminal``, ``reward`` and ``discount`` are always added);
    `episode_metadata` holds per-episode features.
    """

    observation: Mapping[str, Any]  # Feature, or a nested dict of them
    step: Mapping[str, Any] = dataclasses.field(default_factory=_default_step_features)
    episode_metadata: Mapping[str, Feature] = dataclasses.field(default_factory=dict)

    def features(self) -> tfds.features.FeaturesDict:
        step = {k: _connector(f) for k, f in self.step.items()}
        step["observation"] = _connector(self.observation)
        for flag in ("is_first", "is_last", "is_terminal"):
            step.setdefault(flag, tfds.features.Scalar(dtype=np.bool_))
        for value in ("reward", "discount"):
            step.setdefault(value, tfds.features.Scalar(dtype=np.float32))
        features = {"steps": tfds.features.Dataset(step)}
        if self.episode_metadata:
            features["episode_metadata"] = _connector(self.episode_metadata)
        return tfds.features.FeaturesDict(features)


def _connector(feature: Feature | Mapping[str, Any]) -> tfds.features.FeatureConnector:
    """A feature, or a nested dict of them (e.g. RT-1's dict actions) as a FeaturesDict."""
    if isinstance(feature, Mapping):
        return tfds.features.FeaturesDict({k: _connector(f) for k, f in feature.items()})
    return feature.to_tfds()


def complete_step_columns(steps: dict[str, Any], length: int) -> dict[str, Any]:
    """Adds the RLDS bookkeeping columns an episode lacks (first/last/terminal flags, reward,
    discount), assuming the episode ended at its last step."""
    flags = np.zeros(length, bool)
    steps.setdefault("is_first", flags.copy())
    steps["is_first"][:1] = True
    steps.setdefault("is_last", flags.copy())
    steps["is_last"][-1:] = True
    steps.setdefault("is_terminal", steps["is_last"].copy())
    steps.setdefault("reward", steps["is_last"].astype(np.float32))
    steps.setdefault("discount", np.ones(length, np.float32))
    return steps


def step_rows(columns: Mapping[str, Any], length: int) -> list[dict[str, Any]]:
    """Columns ``{key: [T, ...]}`` (nested) to a list of T step dicts."""

    def row(tree, t):
        return {k: row(v, t) if isinstance(v, Mapping) else v[t] for k, v in tree.items()}

    return [row(columns, t) for t in range(length)]


def write_episodes(
    data_dir: str,
    name: str,
    schema: RldsSchema,
    splits: Mapping[str, Callable[[], Iterable[dict[str, Any]]]],
    *,
    version: str = "1.0.0",
    description: str = "",
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Writes `name`/`version` under `data_dir` and returns the version directory.

    `splits` maps a split name to a function returning that split's episodes (column dicts as in
    the module docstring); they are consumed lazily, one episode in memory at a time. An existing
    complete dataset is kept unless `overwrite`. `metadata` (JSON values) is saved beside the
    dataset (``metadata.json``; readers get it as ``builder.info.metadata``).
    """
    features = schema.features()

    def generate(split: str):
        for index, episode in enumerate(splits[split]()):
            length = len(episode["steps"]["is_first"])
            example = {"steps": step_rows(episode["steps"], length)}
            if schema.episode_metadata:
                example["episode_metadata"] = episode["episode_metadata"]
            yield f"{split}_{index}", example

    class_attrs = {
        "name": name,
        "VERSION": tfds.core.Version(version),
        "_info": lambda self: tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=features,
            metadata=tfds.core.MetadataDict(metadata) if metadata else None,
        ),
        "_split_generators": lambda self, dl_manager: {s: generate(s) for s in splits},
        "_generate_examples": None,
    }
    with tfds.core.registered.skip_registration():
        builder_cls = type(f"Written_{name}", (tfds.core.GeneratorBasedBuilder,), class_attrs)
    builder = builder_cls(data_dir=data_dir)
    if overwrite and os.path.exists(os.fspath(builder.data_dir)):
        shutil.rmtree(os.fspath(builder.data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        )
    )
    return os.fspath(builder.data_dir)
