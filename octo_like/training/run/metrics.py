"""Metric writers (JSONL always; TensorBoard and wandb optional), dataset shares and a NaN guard.

What a run records for later; the console progress line it shows meanwhile is `progress.py`.

JSONL resume rule: a resumed run opens ``metrics.jsonl`` with ``resume_step`` = the checkpoint
step it restored; lines with ``step > resume_step`` (written after that checkpoint by the run
that crashed) are dropped, so the file holds each step once. A fresh run (``resume_step=None``)
starts an empty file. `read_jsonl` skips a torn last line (a crash mid-write).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TextIO, runtime_checkable

import numpy as np

from octo_like import storage

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_SUBDIR = "tensorboard"
WANDB_ID_FILE = "wandb_run_id.txt"
_RESERVED = ("step", "split", "time")


@runtime_checkable
class MetricWriter(Protocol):
    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Python floats from numpy/jax scalars; names the offending key otherwise."""
    out = {}
    for key, value in metrics.items():
        if key in _RESERVED:
            raise ValueError(f"metric name {key!r} is reserved (reserved: {_RESERVED})")
        array = np.asarray(value)
        numeric = np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
        if array.size != 1 or not numeric:
            raise TypeError(f"metric {key!r} must be a number, got {array.dtype}{array.shape}")
        out[key] = float(array.reshape(()))
    return out


class NullWriter:
    """What non-main processes get: every call is a no-op."""

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlWriter:
    """One JSON object per line: ``{"step", "split", "time", **metrics}``.

    Local files are appended to and flushed per write. Object stores (``gs://``) cannot
    append, so for a URL the lines are kept and the whole file is rewritten (atomically) at
    most every `remote_flush_seconds`, and on `flush`/`close`.
    """

    def __init__(
        self, path: str, *, resume_step: int | None = None, remote_flush_seconds: float = 30.0
    ):
        self.path = storage.absolute(path)
        self._remote = storage.has_scheme(self.path)
        self._remote_flush_seconds = remote_flush_seconds
        kept: list[dict] = []
        if resume_step is not None and storage.exists(self.path):
            kept = [e for e in read_jsonl(self.path) if e["step"] <= resume_step]
        self._lines = [json.dumps(e) + "\n" for e in kept]
        self._closed = False
        self._file: TextIO | None = None
        if self._remote:
            self._write_remote()
            return
        storage.makedirs(storage.dirname(self.path))
        if resume_step is not None:
            storage.write_text(self.path, "".join(self._lines))
        self._file = open(self.path, "a" if resume_step is not None else "w")  # noqa: SIM115

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        if self._closed:
            raise RuntimeError(f"JsonlWriter({self.path!r}) is closed")
        entry = {"step": int(step), "split": prefix, "time": time.time(), **_scalars(metrics)}
        line = json.dumps(entry) + "\n"
        if self._file is not None:
            self._file.write(line)
            self._file.flush()
            return
        self._lines.append(line)
        if time.monotonic() - self._last_write >= self._remote_flush_seconds:
            self._write_remote()

    def _write_remote(self) -> None:
        storage.write_text(self.path, "".join(self._lines))
        self._last_write = time.monotonic()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        elif not self._closed:
            self._write_remote()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True


def read_jsonl(path: str) -> list[dict]:
    """Entries of a metrics file, in order; a torn (unparseable) last line is skipped."""
    lines = [line for line in storage.read_text(path).split("\n") if line.strip()]
    entries = []
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                log.warning("%s: skipping a torn last line (%s)", path, e)
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON object: {line[:80]!r}") from e
        if not isinstance(entry, dict) or "step" not in entry:
            raise ValueError(f"{path}:{i + 1}: expected an object with a 'step', got {line[:80]!r}")
        entries.append(entry)
    return entries


class TensorBoardWriter:
    """Scalars as ``<prefix>/<name>`` in TensorBoard event files.

    Written with `tf.summary.write` and the "scalars" plugin metadata, so the `tensorboard`
    package (which `tf.summary.scalar` needs) is only required to *view* the logs.
    """

    def __init__(self, logdir: str):
        try:
            import tensorflow as tf
            from tensorflow.core.framework import summary_pb2
        except ImportError as e:
            raise ImportError(
                "TensorBoard logging needs TensorFlow (pip install tensorflow-cpu), "
                "or disable it with --config.tensorboard=False"
            ) from e
        self._tf = tf
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        ).SerializeToString()
        self._writer = tf.summary.create_file_writer(logdir)

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        tf = self._tf
        with self._writer.as_default():
            for key, value in _scalars(metrics).items():
                tf.summary.write(
                    f"{prefix}/{key}",
                    tf.constant(value, tf.float32),
                    step=int(step),
                    metadata=self._metadata,
                )

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbWriter:
    """Logs ``<prefix>/<name>`` to Weights & Biases; `run_id` + resume="allow" continues a run."""

    def __init__(
        self,
        project: str,
        *,
        name: str | None = None,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        directory: str | None = None,
    ):
        try:
            import wandb
        except ImportError as e:
            raise ImportError(
                "wandb logging needs the wandb package: pip install wandb "
                "(or leave wandb_project empty)"
            ) from e
        self._wandb = wandb
        self._run = wandb.init(
            project=project,
            name=name,
            id=run_id,
            resume="allow" if run_id else None,
            config=dict(config) if config is not None else None,
            dir=directory,
        )

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        values = {f"{prefix}/{k}": v for k, v in _scalars(metrics).items()}
        self._run.log(values, step=int(step))

    def flush(self) -> None:
        pass  # wandb streams in its own process

    def close(self) -> None:
        self._run.finish()


class MultiWriter:
    """Fans each call out to several writers."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = list(writers)

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "train") -> None:
        for writer in self.writers:
            writer.write(step, metrics, prefix)

    def flush(self) -> None:
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def make_writers(
    workdir: str,
    *,
    tensorboard: bool,
    wandb_project: str | None,
    is_main_process: bool,
    resume_step: int | None = None,
    wandb_config: Mapping[str, Any] | None = None,
) -> MetricWriter:
    """``workdir/metrics.jsonl`` always, plus ``workdir/tensorboard`` and wandb if asked.

    The wandb run id is kept in ``workdir/wandb_run_id.txt`` so a resumed run continues the
    same wandb run. `resume_step`: see the module docstring.
    """
    if not is_main_process:
        return NullWriter()
    writers: list[MetricWriter] = [
        JsonlWriter(storage.join(workdir, METRICS_FILE), resume_step=resume_step)
    ]
    if tensorboard:
        writers.append(TensorBoardWriter(storage.join(workdir, TENSORBOARD_SUBDIR)))
    if wandb_project:
        id_file = storage.join(workdir, WANDB_ID_FILE)
        if storage.exists(id_file):
            run_id = storage.read_text(id_file).strip()
        else:
            run_id = uuid.uuid4().hex[:16]
            storage.write_text(id_file, run_id)
        writers.append(
            WandbWriter(
                wandb_project,
                name=storage.basename(workdir),
                run_id=run_id,
                config=wandb_config,
                directory=None
                if storage.has_scheme(workdir)
                else workdir,  # wandb's files are local
            )
        )
    return MultiWriter(writers)


class DatasetShares:
    """Frames per dataset in this process's training batches, as shares of a log window
    (``data/share/<dataset>``), to check a mix against its weights. Counted by the prefetch
    thread, taken by the training thread."""

    def __init__(self):
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, names: Any) -> None:
        """`names`: the batch's ``dataset_name`` (bytes or str, any shape)."""
        flat = np.asarray(names, dtype=object).reshape(-1)
        values = [n.decode() if isinstance(n, bytes) else str(n) for n in flat]
        with self._lock:
            self._counts.update(values)

    def take(self) -> dict[str, float]:
        """The shares since the last call (empty when nothing was counted)."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        total = sum(counts.values())
        return {f"data/share/{k}": v / total for k, v in sorted(counts.items())} if total else {}


def check_finite(metrics: Mapping[str, Any], step_range: tuple[int, int]) -> None:
    """Raises FloatingPointError naming every NaN/Inf metric and the steps [first, last]."""
    bad = []
    for key, value in sorted(metrics.items()):
        values = np.asarray(value, dtype=np.float64).reshape(-1)
        finite = np.isfinite(values)
        if not finite.all():
            bad.append(f"{key}={values[~finite][0]}")
    if bad:
        first, last = step_range
        raise FloatingPointError(
            f"non-finite metrics in steps [{first}, {last}]: {', '.join(bad)}; resume from the "
            "last checkpoint with a lower learning rate or inspect the data of these steps"
        )
