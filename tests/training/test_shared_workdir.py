"""A run of several processes refuses a local workdir other hosts cannot see, unless declared
shared; a URL workdir, one process, or a declared shared path pass."""

from __future__ import annotations

import pytest

from octo_like.training.config import distributed_config
from octo_like.training.parallel.distributed import check_shared_workdir
from tests.training.test_train import debug_config


def test_a_local_workdir_is_refused_for_several_processes():
    with pytest.raises(ValueError, match=r"/runs/x is a local path, but this run has 16") as e:
        check_shared_workdir("/runs/x", 16, declared_shared=False)
    assert "--config.distributed.shared_workdir=True" in str(e.value)
    assert "gs://" in str(e.value)
    check_shared_workdir("gs://bucket/runs/x", 16, declared_shared=False)
    check_shared_workdir("/nfs/runs/x", 16, declared_shared=True)
    check_shared_workdir("/runs/x", 1, declared_shared=False)


def test_the_declaration_is_a_config_key(tmp_path):
    config = debug_config(str(tmp_path / "data"), str(tmp_path / "stats"))
    assert distributed_config(config).shared_workdir is False
    config.distributed.shared_workdir = True
    assert distributed_config(config).shared_workdir is True
