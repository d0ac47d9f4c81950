"""Where a benchmark result was made (`octo_like.envs.transfer.provenance`): the commit of
the code that ran, dirty or not, and the CPU model with the numbers that tell its generations
apart."""

from __future__ import annotations

import subprocess

from octo_like.envs.transfer import provenance
from octo_like.training.parallel.runtime import cpu_model


def git(path, *argv):
    subprocess.run(["git", "-C", str(path), *argv], check=True, capture_output=True)


def test_the_commit_is_named_and_local_changes_are_said(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = provenance.code_commit(str(tmp_path))
    assert len(clean) == 12 and int(clean, 16) >= 0
    (tmp_path / "notes.txt").write_text("untracked files are not the code that ran\n")
    assert provenance.code_commit(str(tmp_path)) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.code_commit(str(tmp_path)) == clean + "+dirty"
    outside = tmp_path.parent / f"{tmp_path.name}_installed"  # a package outside any checkout
    outside.mkdir()
    assert provenance.code_commit(str(outside)) == provenance.UNKNOWN
    assert set(provenance.current()) == {"commit", "cpu"}


def test_the_cpu_model_carries_family_and_model_where_the_name_is_bare(tmp_path):
    info = tmp_path / "cpuinfo"
    block = "processor\t: {i}\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n\n"
    info.write_text(block.format(i=0) + block.format(i=1).replace("17", "99"))
    assert cpu_model(str(info)) == "AMD EPYC, family 25 model 17"  # the first processor's
    info.write_text("processor\t: 0\nmodel name\t: Apple M2\n")
    assert cpu_model(str(info)) == "Apple M2"
    assert cpu_model(str(tmp_path / "missing")) == ""
