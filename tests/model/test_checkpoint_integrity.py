"""Checkpoints verify themselves (issue 13): byte edits, truncation, deleted files, unreadable
metadata and non-finite parameters are refused with an error naming checkpoint, item and array;
training resume falls back past a corrupt step; scripts/verify_checkpoint.py checks without
loading a model."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from octo_like.model.checkpoint_integrity import (
    CHECKSUMS_FILE,
    COMMITTED_BY_ORBAX,
    CheckpointCorruptError,
)
from octo_like.model.octo_model import OctoModel
from octo_like.training.checkpoints.checkpoint import CheckpointConfig, Checkpointer
from tests.training.test_finetune import readouts, tiny_batch, tiny_config, tiny_model

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import verify_checkpoint  # noqa: E402

ARRAY = "head.network.blocks.0.up.kernel"  # a parameter every tiny model has


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[OctoModel, pathlib.Path]:
    model = tiny_model(tiny_config(), tiny_batch())
    directory = tmp_path_factory.mktemp("integrity") / "checkpoints"
    model.save_pretrained(3, str(directory))
    return model, directory


@pytest.fixture
def copy(saved, tmp_path) -> pathlib.Path:
    """A private copy of the saved checkpoint to damage."""
    import shutil

    shutil.copytree(saved[1], tmp_path / "checkpoints")
    return tmp_path / "checkpoints"


def array_dir(directory: pathlib.Path, name: str = ARRAY) -> pathlib.Path:
    path = directory / "3" / "params" / name
    assert path.is_dir(), sorted(p.name for p in (directory / "3" / "params").iterdir())
    return path


def chunk_file(directory: pathlib.Path) -> pathlib.Path:
    (chunk,) = [p for p in array_dir(directory).iterdir() if not p.name.startswith(".")]
    return chunk


def test_save_writes_a_checksum_per_file_and_one_directory_per_array(saved):
    model, directory = saved
    manifest = json.loads((directory / "3" / CHECKSUMS_FILE).read_text())
    files = manifest["files"]
    on_disk = {
        str(p.relative_to(directory / "3"))
        for p in (directory / "3").rglob("*")
        if p.is_file() and p.name != CHECKSUMS_FILE
    }
    assert set(files) == on_disk - set(COMMITTED_BY_ORBAX)  # checked by name, not by bytes
    assert f"params/{ARRAY}/.zarray" in files  # the params item names its arrays
    loaded = OctoModel.load_pretrained(str(directory))
    np.testing.assert_array_equal(readouts(loaded, tiny_batch()), readouts(model, tiny_batch()))


def flip_bytes(path: pathlib.Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: flip_bytes(chunk_file(d)), "contents changed"),
        (lambda d: flip_bytes(chunk_file(d), count=1), "contents changed"),
        (lambda d: chunk_file(d).write_bytes(chunk_file(d).read_bytes()[:10]), "10 bytes, saved"),
        (lambda d: chunk_file(d).unlink(), "missing"),
    ],
    ids=["64-bytes", "one-byte", "truncated", "deleted"],
)
def test_damaged_array_files_are_refused_naming_item_and_array(copy, damage, message):
    damage(copy)
    with pytest.raises(CheckpointCorruptError) as error:
        OctoModel.load_pretrained(str(copy))
    text = str(error.value)
    assert str(copy / "3") in text and "item 'params'" in text and f"array '{ARRAY}'" in text
    assert message in text


def test_a_changed_file_whose_entry_is_deleted_or_an_added_file_is_refused_by_name(copy):
    """Issue 40: the manifest must list every file of the step, not only vouch for those it
    lists (a changed array with its entry deleted used to load)."""
    assert OctoModel.load_pretrained(str(copy)) is not None  # healthy first
    manifest_path = copy / "3" / CHECKSUMS_FILE
    manifest = json.loads(manifest_path.read_text())
    flip_bytes(chunk_file(copy))
    del manifest["files"][str(chunk_file(copy).relative_to(copy / "3"))]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match=f"array '{ARRAY}'.*not listed"):
        OctoModel.load_pretrained(str(copy))
    (copy / "3" / "config" / "notes.txt").write_text("added after the save")
    assert verify_checkpoint.main([str(copy)]) == 1
    with pytest.raises(CheckpointCorruptError, match="item 'config', file notes.txt: on disk"):
        OctoModel.load_pretrained(str(copy))


def test_orbax_step_metadata_is_checked_by_its_contents_without_the_commit_time(copy, capsys):
    """Orbax fills in the commit time after an async save's manifest: that field may differ,
    any other change is refused, and a step whose metadata is not JSON is never adopted."""
    path = copy / "3" / "_CHECKPOINT_METADATA"
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps({**metadata, "commit_timestamp_nsecs": 1}))
    assert verify_checkpoint.main([str(copy)]) == 0
    path.write_text(json.dumps({**metadata, "custom_metadata": {"edited": 1}}))
    assert verify_checkpoint.main([str(copy)]) == 1
    assert "step file '_CHECKPOINT_METADATA': contents changed" in capsys.readouterr().out
    path.write_text("{not json")
    (copy / "3" / CHECKSUMS_FILE).unlink()
    assert verify_checkpoint.main([str(copy), "--write_missing"]) == 1
    assert "is not orbax's JSON step metadata" in capsys.readouterr().out
    assert not (copy / "3" / CHECKSUMS_FILE).exists()


def test_unreadable_metadata_and_manifest_are_named(copy):
    (copy / "3" / "params" / "_METADATA").write_bytes(b"\xff\xfe not json")
    with pytest.raises(CheckpointCorruptError, match="item 'params', metadata file _METADATA"):
        OctoModel.load_pretrained(str(copy))
    (copy / "3" / CHECKSUMS_FILE).write_text("{truncated")
    with pytest.raises(CheckpointCorruptError, match=f"{CHECKSUMS_FILE} is unreadable"):
        OctoModel.load_pretrained(str(copy))


def test_policy_refuses_a_corrupted_checkpoint(copy):
    from octo_like.inference.policy import Policy

    flip_bytes(chunk_file(copy))
    with pytest.raises(CheckpointCorruptError, match=f"array '{ARRAY}'"):
        Policy.from_checkpoint(str(copy))


def test_non_finite_parameters_are_refused_even_with_matching_checksums(tmp_path):
    model = tiny_model(tiny_config(), tiny_batch())
    params = nnx.state(model.module, nnx.Param)
    kernel = params["head"]["network"]["blocks"][0]["up"]["kernel"]
    kernel.value = kernel.value.at[0, 0].set(jnp.nan)
    nnx.update(model.module, params)
    model.save_pretrained(1, str(tmp_path))
    with pytest.raises(CheckpointCorruptError, match=rf"not finite.*\n  {ARRAY}: 1 of \d+"):
        OctoModel.load_pretrained(str(tmp_path))


def test_steps_saved_before_checksums_load_with_a_warning_that_names_the_risk(copy, caplog):
    (copy / "3" / CHECKSUMS_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        OctoModel.load_pretrained(str(copy))
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "loading it UNVERIFIED" in message and "corrupted bytes would load" in message
    assert "--write_missing" in message


def test_the_tokenizer_beside_the_steps_is_checksummed(tmp_path, capsys):
    """One flipped bit in spiece.model turns "pick" into another word: refused by name."""
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from tests.inference import conftest as inference

    language = write_tiny_t5_checkpoint(str(tmp_path / "t5"))
    copy = tmp_path / "checkpoints"
    inference.host_initialized_model(inference.tiny_config(language)).save_pretrained(3, str(copy))
    spiece = copy / "language_assets" / "spiece.model"
    assert spiece.exists()
    manifest = json.loads((copy / "3" / CHECKSUMS_FILE).read_text())
    assert "language_assets/spiece.model" in manifest["assets"]
    data = bytearray(spiece.read_bytes())
    data[len(data) // 2] ^= 0x01
    spiece.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="shared asset language_assets/spiece.model"):
        OctoModel.load_pretrained(str(copy))
    assert verify_checkpoint.main([str(copy)]) == 1
    assert "spiece.model: contents changed" in capsys.readouterr().out


def test_an_unfinished_step_is_never_loaded(copy):
    from octo_like.inference import Policy

    (copy / "3" / "_CHECKPOINT_METADATA").unlink()  # a save that never finished
    for load in (
        lambda: OctoModel.load_pretrained(str(copy), 3),
        lambda: OctoModel.load_pretrained(str(copy)),
        lambda: Policy.from_checkpoint(str(copy), step=3, warmup=False),
    ):
        with pytest.raises(FileNotFoundError, match="not a finished save|no complete checkpoint"):
            load()


def test_verify_checkpoint_script(copy, capsys):
    assert verify_checkpoint.main([str(copy)]) == 0
    assert "step 3: ok:" in capsys.readouterr().out
    flip_bytes(chunk_file(copy))
    assert verify_checkpoint.main([str(copy / "3")]) == 1
    out = capsys.readouterr().out
    assert "corrupt" in out and f"array '{ARRAY}'" in out
    assert json.loads(out.strip().splitlines()[-1])["bad_steps"] == ["3"]
    (copy / "3" / CHECKSUMS_FILE).unlink()  # nothing vouches for it: an error, then adopted
    assert verify_checkpoint.main([str(copy)]) == 1
    out = capsys.readouterr().out
    assert "step 3: unverified" in out
    assert json.loads(out.strip().splitlines()[-1])["bad_steps"] == ["3"]
    assert verify_checkpoint.main([str(copy), "--write_missing"]) == 0
    assert verify_checkpoint.main([str(copy), "--step", "3"]) == 0
    assert "step 3: ok" in capsys.readouterr().out


def meta() -> dict:
    model_config = tiny_config().to_dict()
    return {"model_config": model_config, "dataset_statistics": {}, "input_spec": {}}


def test_resume_falls_back_to_the_previous_step_when_the_latest_is_corrupt(tmp_path, caplog):
    state = {"x": jnp.arange(4.0), "y": jnp.ones((3, 3))}
    config = CheckpointConfig(save_every=1, keep_last=5)
    with Checkpointer(str(tmp_path), config) as ckpt:
        for step in (1, 2):
            ckpt.save(step, jax_tree_scale(state, step), params=state, **meta())
    assert (tmp_path / "2" / CHECKSUMS_FILE).exists()
    data = [p for p in (tmp_path / "2" / "train_state").rglob("*") if p.is_file()]
    flip_bytes(max(data, key=lambda p: p.stat().st_size))
    with Checkpointer(str(tmp_path), config) as ckpt, caplog.at_level(logging.WARNING):
        assert ckpt.resume_step() == 1
        restored = ckpt.restore(1, state)
        np.testing.assert_array_equal(restored["x"], np.arange(4.0))
        assert ckpt.save(2, state, params=state, **meta())  # the step is free again
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "item 'train_state'" in log and "falling back" in log
    (aside,) = [p.name for p in tmp_path.iterdir() if p.name.startswith("2.corrupt-")]
    assert os.listdir(tmp_path / aside)  # moved aside, not deleted
    with Checkpointer(str(tmp_path), config) as ckpt:
        assert ckpt.resume_step() == 2


def test_resume_never_trusts_a_step_saved_without_a_manifest(tmp_path, caplog):
    """A process killed between orbax's commit and the manifest leaves a final step nothing
    vouches for: resume moves it aside and takes the previous step."""
    state = {"x": jnp.arange(4.0)}
    config = CheckpointConfig(save_every=1, keep_last=5)
    with Checkpointer(str(tmp_path), config) as ckpt:
        for step in (1, 2):
            ckpt.save(step, jax_tree_scale(state, step), params=state, **meta())
    (tmp_path / "2" / CHECKSUMS_FILE).unlink()
    with Checkpointer(str(tmp_path), config) as ckpt, caplog.at_level(logging.ERROR):
        assert ckpt.resume_step() == 1
    assert "no checksum manifest" in "\n".join(r.getMessage() for r in caplog.records)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("2.unverified-")]


def test_a_step_that_fails_to_restore_falls_back_to_the_previous_one(tmp_path, caplog):
    """Even with a manifest that vouches for truncated bytes (what resuming used to write for
    a killed run's newest step), restoring falls back instead of crashing every rerun."""
    from octo_like.model.checkpoint_integrity import write_checksums

    state = {"x": jnp.arange(64.0), "y": jnp.ones((16, 16))}
    config = CheckpointConfig(save_every=1, keep_last=5)
    with Checkpointer(str(tmp_path), config) as ckpt:
        for step in (1, 2):
            ckpt.save(step, jax_tree_scale(state, step), params=state, **meta())
    data = [p for p in (tmp_path / "2" / "train_state").rglob("*") if p.is_file()]
    biggest = max(data, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:20])  # truncated...
    write_checksums(str(tmp_path / "2"))  # ...and vouched for
    with Checkpointer(str(tmp_path), config) as ckpt, caplog.at_level(logging.ERROR):
        assert ckpt.resume_step() == 2
        step, restored = ckpt.restore_trusted(2, state)
    assert step == 1
    np.testing.assert_array_equal(restored["x"], np.arange(64.0))
    assert "restoring checkpoint" in "\n".join(r.getMessage() for r in caplog.records)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("2.corrupt-")]


def jax_tree_scale(state, factor):
    import jax

    return jax.tree.map(lambda x: x * factor, state)


def test_fine_tuning_from_a_corrupted_checkpoint_is_refused(copy):
    """The fine-tuning initializer loads the base through the same verified path."""
    import jax

    from octo_like.training.finetuning.finetune import FinetuneSource, PretrainedInitializer

    flip_bytes(chunk_file(copy))
    source = FinetuneSource(str(copy), 3, "full", "language", save_frozen_params=True)
    initializer = PretrainedInitializer(source, tiny_config())
    with pytest.raises(CheckpointCorruptError, match=f"array '{ARRAY}'"):
        initializer(tiny_batch(), jax.random.key(0), {})


def test_write_missing_on_a_read_only_checkpoint_says_so_in_one_line(copy, capsys, monkeypatch):
    """Issue 69 item 5: a 22-line OSError traceback before. The directory is made read-only
    for the write the script attempts (tests run as root, whom chmod does not stop)."""
    from octo_like import storage

    (copy / "3" / CHECKSUMS_FILE).unlink()

    def read_only(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(storage, "write_text", read_only)
    assert verify_checkpoint.main([str(copy), "--write_missing"]) == 1
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert line.startswith("step 3: unverified:") and "read-only" in line


def test_an_unfinished_newest_step_is_named_when_the_previous_one_loads(copy, caplog):
    """Issue 69 item 5: only absl's "Metadata file does not exist" said why step 4 was passed
    over."""
    import shutil

    shutil.copytree(copy / "3", copy / "4")
    (copy / "4" / "_CHECKPOINT_METADATA").unlink()
    with caplog.at_level(logging.WARNING, logger="octo_like.model.model_checkpoint"):
        OctoModel.load_pretrained(str(copy))
    assert "step(s) [4] unfinished" in caplog.text and "loading step 3" in caplog.text


def test_a_truncated_array_of_a_step_without_checksums_is_named(copy):
    """Issue 69 item 5: a raw TensorStore error before, naming neither array nor step."""
    (copy / "3" / CHECKSUMS_FILE).unlink()
    chunk = chunk_file(copy)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 3])
    with pytest.raises(CheckpointCorruptError) as error:
        OctoModel.load_pretrained(str(copy), 3)
    message = str(error.value)
    assert f"checkpoint {copy / '3'}" in message and "cannot be read" in message
    assert f"array '{ARRAY}'" in message
