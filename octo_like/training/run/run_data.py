"""A training run's data, before its batches: the synthetic set written once, the split each
dataset trains and validates on, every dataset opened with statistics computed once for the
whole job (process 0, sent to the others), the stream's seed, and what of a batch the network
reads.

Split from `loop.py`, which runs the steps; both read top to bottom in the order a run does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

from octo_like import storage
from octo_like.config.typed import ConfigError
from octo_like.data import builder_dir, pipeline, prepare, splits, synthetic
from octo_like.data.config import DatasetSource
from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.model.base_checkpoint import flat_params
from octo_like.model.model_inputs import tokenize_tasks
from octo_like.model.octo_model import OctoModel, action_statistics_entry
from octo_like.normalization import DatasetStatistics
from octo_like.training.config import SYNTHETIC, TrainConfig
from octo_like.training.parallel import distributed
from octo_like.training.run.abstract_inputs import abstract_batch

log = logging.getLogger(__name__)


def prepare_synthetic_data(config: TrainConfig) -> None:
    """Writes the synthetic set and its tokenizer once (main process), then syncs hosts.

    Data collected elsewhere (the simulated mixes) is written by the entry point through its
    `GeneratedDatasets` before the loop starts; the loop only reads dataset locations.
    """
    if config.mix != SYNTHETIC:
        return

    def write():
        synthetic.ensure_synthetic_bridge(config.data.datasets[0].location)
        tokenizer_dir = config.model.language.checkpoint_dir
        if config.model.language.encoder == "small" and not storage.exists(
            storage.join(tokenizer_dir, "spiece.model")
        ):
            from octo_like.model.language.vocabulary import write_embedded_tokenizer

            write_embedded_tokenizer(tokenizer_dir, synthetic.DEFAULT_INSTRUCTIONS)

    distributed.on_main_process_then_sync(write, "synthetic data written")


@dataclasses.dataclass(frozen=True)
class RunSplits:
    """Which split each dataset of a run trains on and validates on (`run_splits`)."""

    sources: tuple[DatasetSource, ...]  # config.data.datasets, each with the split it trains on
    validation: tuple[str, ...] | None  # per source, its held-out split; None: no validation

    def held_out(self, prepared: list[prepare.PreparedDataset]) -> list[prepare.PreparedDataset]:
        """`prepared` (opened for training, with its statistics) reading the held-out splits."""
        return [
            dataclasses.replace(p, source=dataclasses.replace(p.source, split=split))
            for p, split in zip(prepared, self.validation or (), strict=True)
        ]


def run_splits(config: TrainConfig) -> RunSplits:
    """The training and held-out split of every dataset: `config.val_split` for all of them,
    or, with ``"auto"``, Octo's rule per dataset (`splits.holdout_splits`: its ``val`` split,
    else the last 5% of its training split, which then trains on the first 95%; a split the
    dataset lacks is refused, naming its splits). Logged on the main process, with the split
    the statistics are computed over."""
    sources = tuple(config.data.datasets)
    if not config.val_split:
        validation = None
    elif config.val_split != splits.AUTO:
        validation = (config.val_split,) * len(sources)
    else:

        def resolve(source: DatasetSource) -> tuple[str, str]:
            builder = builder_dir.open_source(source.location, source.name)
            return splits.holdout_splits(builder, source.split)

        with ThreadPoolExecutor(min(8, len(sources))) as pool:  # metadata reads (gs://...)
            resolved = list(pool.map(resolve, sources))
        sources = tuple(
            dataclasses.replace(source, split=train)
            for source, (train, _) in zip(sources, resolved, strict=True)
        )
        validation = tuple(val for _, val in resolved)
    if distributed.is_main_process():
        for line in describe_splits(config, sources, validation):
            log.info(line)
    return RunSplits(sources, validation)


def describe_splits(
    config: TrainConfig, sources: Sequence[DatasetSource], validation: Sequence[str] | None
) -> list[str]:
    """One line per distinct (training, validation, statistics) splits, naming its datasets."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for index, source in enumerate(sources):
        val = "none" if validation is None else repr(validation[index])
        statistics = prepare.statistics_split_of(source, config.data)
        groups.setdefault((repr(source.split), val, repr(statistics)), []).append(source.name)
    return [
        f"splits: training reads {train}, validation {val}, statistics over {statistics}: "
        + ", ".join(names)
        for (train, val, statistics), names in groups.items()
    ]


def prepare_datasets(
    config: TrainConfig,
    sources: Sequence[DatasetSource] | None = None,
    *,
    while_computing: prepare.WidthsCallback | None = None,
) -> list:
    """Opens every dataset with its statistics, computed at most once for the whole job;
    `sources`: those of `run_splits` (default: ``config.data.datasets`` as configured).

    Process 0 loads them from the cache or computes them (datasets in parallel) and sends them
    to the other processes, which never read the data for statistics and need no shared
    filesystem for the cache. `while_computing(action_widths, proprio_widths)`
    (`prepare.prepare_datasets`): called once the standardized widths are known; on process 0
    while its statistics are computed, on the others once they are received.
    """
    sources = config.data.datasets if sources is None else sources
    if jax.process_count() == 1:
        return prepare.prepare_datasets(sources, config.data, while_computing=while_computing)
    main = distributed.is_main_process()
    prepared, payload, failure = None, None, None
    if main:
        try:
            prepared = prepare.prepare_datasets(
                sources, config.data, while_computing=while_computing
            )
            payload = json.dumps({"statistics": [p.statistics.to_dict() for p in prepared]})
        except Exception as error:  # every process must hear of it, or they wait forever
            failure = error
            payload = json.dumps({"error": f"{type(error).__name__}: {error}"})
    message = json.loads(distributed.broadcast_text(payload))
    if failure is not None:
        raise failure
    if "error" in message:
        raise RuntimeError(f"process 0 failed to prepare the datasets: {message['error']}")
    received = message["statistics"]
    if main:
        return prepared
    log.info("statistics of %d dataset(s) received from process 0", len(received))
    prepared = [
        prepare.prepare_dataset(source, config.data, statistics=DatasetStatistics.from_dict(stats))
        for source, stats in zip(sources, received, strict=True)
    ]
    if while_computing is not None:
        while_computing(*statistics_widths(prepared))
    return prepared


def statistics_widths(prepared: list[prepare.PreparedDataset]) -> tuple[list, list]:
    """(action widths, proprio widths) of the datasets' standardized data, from their
    statistics (`prepare.statistics_widths`)."""
    widths = [prepare.statistics_widths(p.statistics) for p in prepared]
    return [w[0] for w in widths], [w[1] for w in widths]


def check_action_dims(config: TrainConfig, prepared: list[prepare.PreparedDataset]) -> None:
    """Refuses, before the pipeline and the model are built, a dataset whose actions are wider
    than ``model.action_dim`` (narrower ones are padded): the loss would fail later, naming
    neither the key nor the dataset."""
    wide = [
        (dataset.spec.name, width)
        for dataset, width in zip(prepared, statistics_widths(prepared)[0], strict=True)
        if width > config.model.action_dim
    ]
    if wide:
        listing = ", ".join(f"{name!r} has {width}-dim actions" for name, width in wide)
        raise ConfigError(
            f"{listing} but model.action_dim is {config.model.action_dim}: set "
            f"--config.model.action_dim={max(w for _, w in wide)}"
        )


def host_batch(batch: dict, model: OctoModel) -> dict:
    """Host-side tokenization, then only the arrays the network reads (strings dropped)."""
    task = batch["task"]
    if model.text_tokenizer is not None:
        task = tokenize_tasks(task, model.text_tokenizer)
    task = {k: v for k, v in task.items() if k != "language_instruction"}
    return {k: v for k, v in {**batch, "task": task}.items() if k != "dataset_name"}


def statistics_entries(
    config: TrainConfig, prepared: list[prepare.PreparedDataset]
) -> dict[str, dict]:
    """The statistics a checkpoint records, per dataset, with its action normalization mask."""
    entries = {}
    for dataset in prepared:
        name = dataset.spec.name
        spec = get_dataset_spec(name, config.data.extra_specs)
        entries[name] = action_statistics_entry(
            dataset.statistics.to_dict(),
            config.data.normalization,
            spec.action_normalization_mask,
        )
    return entries


def foreseen_batch(config: TrainConfig, action_widths: list, proprio_widths: list) -> dict | None:
    """The global batch the loop will feed, as `jax.ShapeDtypeStruct`s, before the pipeline
    exists: from the config and the standardized widths of the datasets (`statistics_widths`,
    or `prepare.prepare_datasets`' before the statistics), which the pipeline pads to the
    widest, or to the config's width. The model is built and its step compiled for it while the
    pipeline is traced (`pipeline_thread`); `batch_mismatch` then holds the two equal. None when
    the data decides a shape these do not: a width not static in the data's element spec, or a
    camera that keeps each dataset's image size.
    """
    if None in action_widths or None in proprio_widths:
        return None
    action_dim, proprio_dim = pipeline.padded_widths(config.data, action_widths, proprio_widths)
    try:
        return abstract_batch(config, proprio_dim=proprio_dim, action_dim=action_dim)
    except ConfigError:
        return None


def device_batch_spec(host: Mapping[str, Any], global_batch_size: int) -> dict:
    """A host batch (`host_batch`: this process's rows) as the global batch's
    `jax.ShapeDtypeStruct`s: the leaves `distributed.global_batch` makes of it."""

    def spec(leaf):
        array = np.asarray(leaf)
        return jax.ShapeDtypeStruct((global_batch_size, *array.shape[1:]), array.dtype)

    return jax.tree.map(spec, dict(host))


def is_abstract(example: Mapping[str, Any]) -> bool:
    """Whether `example` is shapes only (`jax.ShapeDtypeStruct` leaves: a foreseen batch)."""
    return all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(example))


def device_spec(example: Mapping[str, Any], model: OctoModel, global_batch_size: int) -> dict:
    """`example`'s global device batch as `jax.ShapeDtypeStruct`s (what the step compiles
    for): itself when foreseen, else this process's zeros, tokenized, scaled up."""
    if is_abstract(example):
        return dict(example)
    return device_batch_spec(host_batch(example, model), global_batch_size)


def batch_mismatch(foreseen: Mapping[str, Any], actual: Mapping[str, Any]) -> str | None:
    """None when two batch specs have the same keys, shapes and dtypes; else the first
    difference, named by its path."""
    described = lambda tree: {
        path: f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}"
        for path, leaf in flat_params(tree).items()
    }
    want, have = described(foreseen), described(actual)
    for path in sorted(want.keys() | have.keys()):
        if path not in have:
            return f"{path}: foreseen {want[path]}, absent from the pipeline's batches"
        if path not in want:
            return f"{path}: in the pipeline's batches {have[path]}, not foreseen"
        if want[path] != have[path]:
            return f"{path}: foreseen {want[path]}, the pipeline's {have[path]}"
    return None


def data_stream_seed(config: TrainConfig, start_step: int) -> int:
    """The input pipeline's seed: the run's `seed` (its shuffles, goal relabelling, crops and
    dropout differ per seed, as its initializers do), ``data.seed`` and the step it starts at
    (a resumed run draws fresh batches). Seed 0 from step 0 keeps ``data.seed`` as it was."""
    return config.seed * 1_000_003 + config.data.seed + start_step
