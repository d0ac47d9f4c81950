"""The verifier means something (issue 40): a real training run's async checkpoints (orbax
rewrites ``_CHECKPOINT_METADATA`` when it commits a step, after the manifest is written) verify
ok, and so do the preemption, fine-tuning and synchronous saves; each tamper that used to pass
(a changed file whose entry is deleted, an emptied or truncated table, a changed tokenizer whose
asset entries are deleted) is refused by `scripts/verify_checkpoint.py`, by the loaders and by
resume, naming the file; `Policy.metadata()` reports the step it loaded."""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import re
import shutil
import sys

import pytest
from flax import nnx

import train
from octo_like.inference import Policy
from octo_like.model.base_checkpoint import BaseReference, flat_params
from octo_like.model.checkpoint_integrity import (
    CHECKSUMS_FILE,
    STEP_METADATA,
    CheckpointCorruptError,
)
from octo_like.model.octo_model import OctoModel
from octo_like.training.checkpoints.checkpoint import CheckpointConfig, Checkpointer
from tests.conftest import REPO
from tests.training.test_train import debug_config

sys.path.insert(0, str(REPO / "scripts"))
import verify_checkpoint  # noqa: E402

STEP = 2  # the run's newest step


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> pathlib.Path:
    """``checkpoints/`` of one real run of train.py's debug preset: 2 steps, each saved
    asynchronously, the saved model being the weight average (``optimizer.ema_decay``)."""
    root = tmp_path_factory.mktemp("verifier")
    overrides = {"checkpoint.save_every": 1, "optimizer.ema_decay": 0.5, "val_split": ""}
    config = debug_config(str(root / "data"), str(root / "stats"), **overrides)
    assert train.main(config, str(root / "run"), stop_at_step=STEP).final_step == STEP
    return root / "run" / "checkpoints"


def copy_of(run: pathlib.Path, tmp_path: pathlib.Path, steps=(STEP,)) -> pathlib.Path:
    """A private copy of `steps` and the tokenizer beside them."""
    target = tmp_path / "checkpoints"
    for name in (*map(str, steps), "language_assets"):
        shutil.copytree(run / name, target / name)
    return target


def verify(directory: pathlib.Path, capsys) -> tuple[int, str]:
    code = verify_checkpoint.main([str(directory)])
    return code, capsys.readouterr().out


def manifest_of(directory: pathlib.Path) -> dict:
    return json.loads((directory / str(STEP) / CHECKSUMS_FILE).read_text())


def write_manifest(directory: pathlib.Path, manifest: dict, *, recount: bool) -> None:
    """Writes an edited manifest; `recount`: with its count and tables digest made to agree
    (an edit by someone who knows the format), so only the per-file checks can object."""
    if recount:
        files, assets = manifest["files"], manifest["assets"]
        manifest["count"] = {"files": len(files), "assets": len(assets)}
        text = json.dumps({"files": files, "assets": assets}, sort_keys=True, separators=(",", ":"))
        manifest["tables_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (directory / str(STEP) / CHECKSUMS_FILE).write_text(json.dumps(manifest))


def biggest_params_file(directory: pathlib.Path) -> pathlib.Path:
    files = [p for p in (directory / str(STEP) / "params").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def flip(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_a_training_runs_async_checkpoints_verify_ok(run, tmp_path, capsys):
    for step in (1, STEP):  # orbax filled in the commit time after the manifest was written
        metadata = json.loads((run / str(step) / STEP_METADATA).read_text())
        assert metadata["commit_timestamp_nsecs"] is not None
        assert "commit_success.txt" not in manifest_of(run)["files"]
    code, out = verify(run, capsys)
    assert code == 0, out
    assert "step 1: ok" in out and f"step {STEP}: ok" in out
    copy = copy_of(run, tmp_path)
    with Checkpointer(str(copy), CheckpointConfig(save_every=1)) as checkpointer:
        assert checkpointer.resume_step() == STEP


def relative(path: pathlib.Path, directory: pathlib.Path) -> str:
    return str(path.relative_to(directory / str(STEP)))


def tampered_file_entry_deleted(directory, *, recount=False):
    path = biggest_params_file(directory)
    flip(path)
    manifest = manifest_of(directory)
    del manifest["files"][relative(path, directory)]
    write_manifest(directory, manifest, recount=recount)
    return rf"array '{path.parent.name}' \(file {path.parent.name}/{path.name}\): on disk but not"


def table_emptied(directory):
    write_manifest(directory, {**manifest_of(directory), "files": {}}, recount=False)
    return "its files table is empty"


def table_truncated(directory):
    """One array's entries removed with its files: nothing on disk is unlisted."""
    manifest = manifest_of(directory)
    array = biggest_params_file(directory).parent
    prefix = relative(array, directory) + "/"
    removed = [n for n in manifest["files"] if n.startswith(prefix)]
    for name in removed:
        del manifest["files"][name]
    shutil.rmtree(array)
    write_manifest(directory, manifest, recount=False)
    have, written = len(manifest["files"]), len(manifest["files"]) + len(removed)
    return rf"its files table has {have} entries, {written} when it was written"


def entry_rewritten(directory):
    """A changed file whose entry was updated to match it."""
    path = biggest_params_file(directory)
    flip(path)
    manifest = manifest_of(directory)
    manifest["files"][relative(path, directory)]["sha256"] = hashlib.sha256(
        path.read_bytes()
    ).hexdigest()
    write_manifest(directory, manifest, recount=False)
    return "its tables differ from the SHA-256 written with them"


def tokenizer_tampered_assets_emptied(directory, *, recount=False):
    flip(directory / "language_assets" / "spiece.model")
    write_manifest(directory, {**manifest_of(directory), "assets": {}}, recount=recount)
    return r"shared asset language_assets/spiece.model: the step's config reads it"


TAMPERS = {
    "tampered-file-entry-deleted": tampered_file_entry_deleted,
    "tampered-file-entry-deleted-recounted": lambda d: tampered_file_entry_deleted(d, recount=True),
    "files-table-emptied": table_emptied,
    "files-table-truncated": table_truncated,
    "entry-rewritten-to-match": entry_rewritten,
    "tokenizer-tampered-assets-emptied": tokenizer_tampered_assets_emptied,
    "tokenizer-tampered-assets-emptied-recounted": lambda d: tokenizer_tampered_assets_emptied(
        d, recount=True
    ),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_each_tamper_is_refused_by_the_verifier_the_loaders_and_resume(
    run, tmp_path, capsys, caplog, tamper
):
    copy = copy_of(run, tmp_path)
    code, out = verify(copy, capsys)
    assert code == 0, out  # healthy first
    names = TAMPERS[tamper](copy)
    code, out = verify(copy, capsys)
    assert code == 1 and f"step {STEP}: corrupt" in out
    assert re.search(names, out), out
    with pytest.raises(CheckpointCorruptError, match=names):
        OctoModel.load_pretrained(str(copy))
    with pytest.raises(CheckpointCorruptError, match=names):
        Policy.from_checkpoint(str(copy), warmup=False)
    with (
        Checkpointer(str(copy), CheckpointConfig(save_every=1)) as checkpointer,
        caplog.at_level(logging.ERROR),
    ):
        assert checkpointer.resume_step() is None  # set aside, never resumed from
    assert re.search(names, caplog.text)
    assert [p.name for p in copy.iterdir() if p.name.startswith(f"{STEP}.corrupt-")]


def loop_save(checkpointer: Checkpointer, step: int, model: OctoModel, **kwargs) -> None:
    """What the training loop does at a preemption notice: the regular save (not due at this
    step), the forced one, then waiting for it on every process."""
    params = nnx.state(model.module, nnx.Param).to_pure_dict()
    items = dict(
        params=params,
        model_config=model.config,
        dataset_statistics=model.dataset_statistics,
        input_spec=model.input_spec,
        **kwargs,
    )
    assert not checkpointer.save(step, {"params": params}, **items)
    assert checkpointer.save(step, {"params": params}, **items, force=True)
    checkpointer.wait()


@pytest.mark.parametrize("async_save", [True, False], ids=["async", "sync"])
def test_preemption_and_fine_tuning_saves_verify_ok_and_load(run, tmp_path, capsys, async_save):
    """A fine-tuning run's preemption save: the parameters it shares with its base checkpoint
    are referenced (the base_params item), the tokenizer copied beside the new steps."""
    base = OctoModel.load_pretrained(str(run))
    params = nnx.state(base.module, nnx.Param).to_pure_dict()
    flat = flat_params(params)
    shared = sorted(flat)[: len(flat) // 2]
    reference = BaseReference.create(str(run), STEP, params, shared)
    directory = tmp_path / "finetune" / "checkpoints"
    config = CheckpointConfig(save_every=10, async_save=async_save)
    with Checkpointer(str(directory), config) as checkpointer:
        loop_save(checkpointer, 7, base, base_params=reference)
    assert (directory / "7" / "base_params").is_dir()
    assert (directory / "language_assets" / "spiece.model").exists()
    code, out = verify(directory, capsys)
    assert code == 0, out
    loaded = OctoModel.load_pretrained(str(directory))
    assert sorted(flat_params(nnx.state(loaded.module, nnx.Param).to_pure_dict())) == sorted(flat)


def test_a_manifest_an_earlier_version_wrote_is_still_trusted(run, tmp_path, capsys):
    """Format 1 (before this issue) listed _CHECKPOINT_METADATA as it was before the commit,
    and had no count or digest: still ok, and a changed file it does not list still refused."""
    copy = copy_of(run, tmp_path)
    manifest = manifest_of(copy)
    for key in ("count", "tables_sha256", "step_metadata_sha256"):
        del manifest[key]
    before_commit = json.loads((copy / str(STEP) / STEP_METADATA).read_text())
    before_commit["commit_timestamp_nsecs"] = None
    text = json.dumps(before_commit).encode()
    entry = {"size": len(text), "sha256": hashlib.sha256(text).hexdigest()}
    manifest.update(format=1, files={**manifest["files"], STEP_METADATA: entry})
    write_manifest(copy, manifest, recount=False)
    code, out = verify(copy, capsys)
    assert code == 0, out
    names = tampered_file_entry_deleted(copy)
    code, out = verify(copy, capsys)
    assert code == 1 and re.search(names, out), out


def test_policy_metadata_reports_the_step_it_loaded(run, tmp_path):
    """A higher step directory without orbax's finalization marker (a save still running, or
    killed) is neither loaded nor reported."""
    copy = copy_of(run, tmp_path)
    unfinished = copy / str(STEP + 2)
    shutil.copytree(copy / str(STEP), unfinished)
    (unfinished / STEP_METADATA).unlink()
    policy = Policy.from_checkpoint(str(copy), warmup=False)
    assert policy.metadata()["step"] == STEP
    assert Policy.from_checkpoint(str(copy), step=STEP, warmup=False).metadata()["step"] == STEP
