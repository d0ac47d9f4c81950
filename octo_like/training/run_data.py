"""A training run's data, before its batches: the synthetic set written once, every dataset
opened with statistics computed once for the whole job (process 0, sent to the others), the
stream's seed, and what of a batch the network reads.

Split from `loop.py`, which runs the steps; both read top to bottom in the order a run does.
"""

from __future__ import annotations

import json
import logging

import jax

from octo_like import storage
from octo_like.data import pipeline, synthetic
from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.model.octo_model import OctoModel, action_statistics_entry, tokenize_tasks
from octo_like.normalization import DatasetStatistics
from octo_like.training import distributed
from octo_like.training.config import SYNTHETIC, TrainConfig

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


def prepare_datasets(config: TrainConfig) -> list:
    """Opens every dataset with its statistics, computed at most once for the whole job.

    Process 0 loads them from the cache or computes them (datasets in parallel) and sends them
    to the other processes, which never read the data for statistics and need no shared
    filesystem for the cache.
    """
    sources = config.data.datasets
    if jax.process_count() == 1:
        return pipeline.prepare_datasets(sources, config.data)
    main = distributed.is_main_process()
    prepared, payload, failure = None, None, None
    if main:
        try:
            prepared = pipeline.prepare_datasets(sources, config.data)
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
    return [
        pipeline.prepare_dataset(source, config.data, statistics=DatasetStatistics.from_dict(stats))
        for source, stats in zip(sources, received, strict=True)
    ]


def host_batch(batch: dict, model: OctoModel) -> dict:
    """Host-side tokenization, then only the arrays the network reads (strings dropped)."""
    task = batch["task"]
    if model.text_tokenizer is not None:
        task = tokenize_tasks(task, model.text_tokenizer)
    task = {k: v for k, v in task.items() if k != "language_instruction"}
    return {k: v for k, v in {**batch, "task": task}.items() if k != "dataset_name"}


def statistics_entries(config: TrainConfig, batches: pipeline.Pipeline) -> dict[str, dict]:
    """The statistics a checkpoint records, per dataset, with its action normalization mask."""
    entries = {}
    for name, stats in batches.statistics.items():
        spec = get_dataset_spec(name, config.data.extra_specs)
        entries[name] = action_statistics_entry(
            stats.to_dict(), config.data.normalization, spec.action_normalization_mask
        )
    return entries


def data_stream_seed(config: TrainConfig, start_step: int) -> int:
    """The input pipeline's seed: the run's `seed` (its shuffles, goal relabelling, crops and
    dropout differ per seed, as its initializers do), ``data.seed`` and the step it starts at
    (a resumed run draws fresh batches). Seed 0 from step 0 keeps ``data.seed`` as it was."""
    return config.seed * 1_000_003 + config.data.seed + start_step
