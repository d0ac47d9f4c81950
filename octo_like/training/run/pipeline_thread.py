"""The input pipeline built, and its first batch read, in a thread beside the model's start.

Tracing a many-dataset tf.data pipeline is Python (it holds the GIL: ~17 s for the 25 datasets
of `oxe_magic_soup`); compiling the model's initializers and step is XLA (it does not). Side by
side they share two cores instead of waiting for each other. The thread runs TensorFlow only,
never a JAX collective, so every process keeps its collectives in one order.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator

from octo_like.data.config import DataConfig
from octo_like.data.pipeline import Pipeline, make_pipeline
from octo_like.data.prepare import PreparedDataset
from octo_like.data.rlds import ProcessShard


class PipelineThread:
    """`make_pipeline(config, shard, prepared=prepared)`, then its first batch, in a thread.

    `pipeline()` and `first_batch()` wait for each and raise the thread's error (a bad dataset
    names itself as it would in the calling thread). `build_s`: the build's own duration, once
    built (None before).
    """

    def __init__(self, config: DataConfig, shard: ProcessShard, prepared: list[PreparedDataset]):
        self._built: concurrent.futures.Future = concurrent.futures.Future()
        self._first: concurrent.futures.Future = concurrent.futures.Future()
        self.build_s: float | None = None
        # A daemon: a run that fails elsewhere exits without waiting for the tracing.
        self._thread = threading.Thread(
            target=self._run, args=(config, shard, prepared), name="pipeline-build", daemon=True
        )
        self._thread.start()

    def _run(self, config, shard, prepared) -> None:
        start = time.perf_counter()
        try:
            built = make_pipeline(config, shard, prepared=prepared)
            batches = iter(built)
        except BaseException as error:  # noqa: BLE001 - raised again by pipeline()
            self._built.set_exception(error)
            self._first.set_exception(error)
            return
        self.build_s = time.perf_counter() - start
        self._built.set_result((built, batches))
        try:
            first = next(batches)
        except BaseException as error:  # noqa: BLE001 - raised again by first_batch()
            self._first.set_exception(error)
            return
        self._first.set_result(first)

    def pipeline(self) -> tuple[Pipeline, Iterator[dict]]:
        """The pipeline and the iterator its first batch came from (the rest follow)."""
        return self._built.result()

    def first_batch(self) -> dict:
        return self._first.result()
