"""Device prefetch: the next batches are prepared and put on the devices while a step runs.

A background thread pulls host batches (numpy trees from the tf.data pipeline), applies the
loop's `to_device` (host-side tokenization, then `jax.make_array_from_process_local_data`) and
keeps up to `depth` global batches ready in a queue. The training thread only waits when the
queue is empty, and that wait is what the loop logs as data wait. An error in the thread (a bad
record, a tokenizer error) is re-raised in the training thread by the `next` that would have
returned the failed batch: the same exception object, with the thread's traceback.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

_END = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class DevicePrefetcher:
    """Iterates `transform(batch)` for `batch` in `first_batches` then `source`, `depth` ahead.

    `next_batch()` returns ``(device batch, seconds waited)``; `close()` stops the thread (it
    is a daemon, so an abandoned prefetcher never keeps the process alive).
    """

    def __init__(
        self,
        source: Iterator[Any],
        transform: Callable[[Any], Any],
        *,
        depth: int = 2,
        first_batches: tuple[Any, ...] = (),
    ):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._fill,
            args=(source, transform, first_batches),
            name="device-prefetch",
            daemon=True,
        )
        self._thread.start()

    def _put(self, item) -> bool:
        """Blocks until there is room (or the prefetcher is closed); False once closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, source, transform, first_batches) -> None:
        try:
            for batches in (first_batches, source):
                for batch in batches:
                    if self._stop.is_set() or not self._put(transform(batch)):
                        return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the training thread
            self._put(_Failure(error))

    def next_batch(self) -> tuple[Any, float]:
        """The next device batch and the seconds spent waiting for it.

        Raises StopIteration when the source is exhausted, or the thread's error.
        """
        start = time.perf_counter()
        item = self._queue.get()
        waited = time.perf_counter() - start
        if item is _END:
            self._put(_END)  # later calls stop too
            raise StopIteration
        if isinstance(item, _Failure):
            self._put(item)  # later calls fail the same way instead of waiting forever
            raise item.error  # the original exception, its traceback from the thread kept
        return item, waited

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)
        if self._thread.is_alive():  # inside a slow read; it exits before its next batch
            log.warning("device prefetch thread still reading; it stops at its next batch")
