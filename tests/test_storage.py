"""octo_like.storage on a local directory and on a URL scheme (the in-memory ``ram://``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from octo_like import storage
from tests import memory_fs


@pytest.fixture
def ram_root(request):
    memory_fs.register()
    root = f"ram://storage-{request.node.name}"
    yield root
    memory_fs.clear(root)


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "root")
        return
    memory_fs.register()
    url = f"ram://storage-{request.node.name.replace('[', '-').rstrip(']')}"
    yield url
    memory_fs.clear(url)


def test_paths_keep_their_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("gs://bucket/run/") == "gs://bucket/run"
    assert storage.join("gs://bucket/run", "checkpoints", "2") == "gs://bucket/run/checkpoints/2"
    assert storage.dirname("gs://bucket/run/metrics.jsonl") == "gs://bucket/run"
    assert storage.basename("gs://bucket/run/") == "run"
    assert storage.absolute("run") == str(tmp_path / "run")
    assert storage.has_scheme("s3://b/x") and not storage.has_scheme("/tmp/x")
    assert storage.orbax_native("gs://b/x") and storage.orbax_native("/tmp/x")
    assert not storage.orbax_native("ram://x") and not storage.orbax_native("s3://b/x")


def test_files_and_trees_round_trip(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URL mistaken for a local path would land here
    storage.write_text(storage.join(root, "a", "config.json"), '{"x": 1}')
    storage.write_bytes(storage.join(root, "a", "b", "blob"), bytes(range(256)))
    assert storage.read_text(storage.join(root, "a", "config.json")) == '{"x": 1}'
    assert storage.listdir(storage.join(root, "a")) == ["b", "config.json"]
    assert storage.isdir(storage.join(root, "a", "b"))
    assert storage.isfile(storage.join(root, "a", "b", "blob"))
    assert storage.listdir(storage.join(root, "missing")) == []
    assert sorted(storage.walk_files(storage.join(root, "a"))) == ["b/blob", "config.json"]

    assert storage.copy_tree(storage.join(root, "a"), str(tmp_path / "down")) == 2
    assert (tmp_path / "down" / "b" / "blob").read_bytes() == bytes(range(256))
    assert storage.copy_tree(str(tmp_path / "down"), storage.join(root, "up")) == 2
    assert storage.read_bytes(storage.join(root, "up", "b", "blob")) == bytes(range(256))

    storage.rename(storage.join(root, "up"), storage.join(root, "moved"))
    assert not storage.exists(storage.join(root, "up"))
    assert storage.read_text(storage.join(root, "moved", "config.json")) == '{"x": 1}'
    storage.remove(storage.join(root, "moved"))
    storage.remove(storage.join(root, "moved"))  # missing: no error
    assert storage.listdir(root) == ["a"]
    assert not any(name.startswith(("ram:", "gs:")) for name in os.listdir(tmp_path))


def test_local_file_gives_local_libraries_a_copy(ram_root):
    data = np.arange(1000, dtype=np.int32).tobytes()
    url = storage.join(ram_root, "weights.bin")
    storage.write_bytes(url, data)
    local = storage.local_file(url)
    assert not storage.has_scheme(local)
    with open(local, "rb") as f:
        assert f.read() == data
    storage.write_bytes(url, data[:400])  # changed remotely: fetched again
    with open(storage.local_file(url), "rb") as f:
        assert f.read() == data[:400]


class UnavailableError(Exception):
    """Named like TensorFlow's error for a transient failure (matched by name)."""


def flaky(failures: int, error: type[Exception] = UnavailableError):
    """A read that fails `failures` times, then returns "data"; `calls` counts attempts."""
    calls = []

    def read():
        calls.append(1)
        if len(calls) <= failures:
            raise error("503 Service Unavailable")
        return "data"

    return read, calls


def test_transient_url_read_errors_are_retried_with_backoff():
    read, calls = flaky(2)
    sleeps = []
    assert storage.retry_transient(read, "gs://b/x.json", sleep=sleeps.append) == "data"
    assert len(calls) == 3 and sleeps == list(storage.RETRY_DELAYS_S[:2])
    read, calls = flaky(2, ConnectionResetError)
    assert storage.retry_transient(read, "gs://b/x", delays_s=(0, 0)) == "data"


def test_retries_are_bounded_and_only_for_transient_errors_on_urls():
    read, calls = flaky(10)
    with pytest.raises(UnavailableError) as error:
        storage.retry_transient(read, "gs://b/x", delays_s=(0, 0, 0))
    assert len(calls) == 4 and "failed 4 times" in str(error.value.__notes__)
    read, calls = flaky(1, FileNotFoundError)  # a missing file is not transient
    with pytest.raises(FileNotFoundError):
        storage.retry_transient(read, "gs://b/x", delays_s=(0, 0))
    assert len(calls) == 1
    read, calls = flaky(1)  # a local path is not retried
    with pytest.raises(UnavailableError):
        storage.retry_transient(read, "/tmp/x", delays_s=(0, 0))
    assert len(calls) == 1
