"""Conditional writes (octo_like/conditional_write.py): a create succeeds only on an absent
file, a replace or delete only on the version read; which stores guarantee it."""

from __future__ import annotations

import os

import pytest

from octo_like import conditional_write as cw
from tests import memory_fs, slow_store


def _round_trip(path: str) -> None:
    assert cw.read_versioned(path) is None
    first = cw.create_exclusive(path, b"one")
    assert first and cw.create_exclusive(path, b"two") is None  # the second create loses
    current = cw.read_versioned(path)
    assert current == cw.Versioned(b"one", first)
    second = cw.replace_if_unchanged(path, b"three", first)
    assert second and second != first
    assert cw.replace_if_unchanged(path, b"stale", first) is None  # a version no longer there
    assert cw.delete_if_unchanged(path, first) is False
    assert cw.read_versioned(path).data == b"three"
    assert cw.delete_if_unchanged(path, second) is True
    assert cw.read_versioned(path) is None
    assert cw.replace_if_unchanged(path, b"gone", second) is None  # deleted since read


def test_local_files_through_tensorstore(tmp_path):
    path = str(tmp_path / "run.lease")
    assert isinstance(cw.store_for(path), cw.TensorStoreKv) and cw.atomic_conditional_writes(path)
    _round_trip(path)
    assert os.listdir(tmp_path) == []  # no lock or temporary files left behind


def test_the_memory_store_of_the_tests():
    memory_fs.register()
    assert cw.atomic_conditional_writes(f"{memory_fs.SCHEME}cw/x")
    _round_trip(f"{memory_fs.SCHEME}cw-{os.getpid()}/run.lease")


def test_the_slow_store_and_a_store_without_conditional_writes(tmp_path):
    slow_store.register(latency_s=0.0)
    assert cw.atomic_conditional_writes(f"{slow_store.SCHEME}{tmp_path}/x")
    _round_trip(f"{slow_store.SCHEME}{tmp_path}/a.lease")
    path = f"{slow_store.CHECK_THEN_WRITE_SCHEME}{tmp_path}/b.lease"
    assert not cw.atomic_conditional_writes(path)  # said, so that the lease can warn
    _round_trip(path)  # same answers, one writer at a time


@pytest.mark.parametrize(
    "url, store",
    [("gs://bucket/run/run.lease", cw.TensorStoreKv), ("s3://bucket/run.lease", cw.CheckThenWrite)],
)
def test_which_stores_are_atomic(url, store):
    """gs:// gets generation preconditions; s3:// (TensorStore's own s3 store is not atomic)
    is check-then-write and says so."""
    assert isinstance(cw.store_for(url), store)
    assert cw.atomic_conditional_writes(url) == (store is cw.TensorStoreKv)
