"""Writing a checkpoint never overwrites or re-vouches what the call did not write (issue 69,
item 1): an existing step is refused unless `overwrite` (then replaced whole after the new one
verified), another model's tokenizer beside the steps is refused, and convert_octo.py refuses an
output directory that holds a checkpoint, or is its own source, before reading or writing."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from octo_like.model.checkpoint_integrity import CheckpointCorruptError, verify_checksums
from octo_like.model.octo_import.convert import check_output_dir, convert_octo
from octo_like.model.octo_model import OctoModel
from tests.training.test_finetune import tiny_batch, tiny_config, tiny_model

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "octo15"
sys.path.insert(0, str(REPO / "scripts"))
import convert_octo as convert_octo_script  # noqa: E402


def tree_digest(directory: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model.module, nnx.Param))]


def scaled(model, factor: float):
    state = nnx.state(model.module, nnx.Param)
    nnx.update(model.module, jax.tree.map(lambda x: x * factor, state))
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model(tiny_config(), tiny_batch())


def test_steps_of_one_model_save_side_by_side(model, tmp_path):
    model.save_pretrained(3, str(tmp_path))
    model.save_pretrained(4, str(tmp_path))
    assert verify_checksums(str(tmp_path / "3")) and verify_checksums(str(tmp_path / "4"))


def test_an_existing_step_is_refused_and_left_as_it_was(model, tmp_path):
    model.save_pretrained(3, str(tmp_path))
    before = tree_digest(tmp_path)
    with pytest.raises(FileExistsError, match=r"3 already exists.*overwrite=True"):
        scaled(tiny_model(tiny_config(), tiny_batch()), 2.0).save_pretrained(3, str(tmp_path))
    assert tree_digest(tmp_path) == before


def test_a_damaged_step_stays_refused_after_a_save_onto_it(model, tmp_path):
    """Before the fix the save skipped the arrays and rewrote the checksums over the damaged
    files, which then verified ok."""
    model.save_pretrained(3, str(tmp_path))
    chunk = next(
        p for p in (tmp_path / "3" / "params").rglob("*") if p.is_file() and "kernel" in str(p)
    )
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError):
        verify_checksums(str(tmp_path / "3"))
    with pytest.raises(FileExistsError):
        model.save_pretrained(3, str(tmp_path))
    with pytest.raises(CheckpointCorruptError):
        verify_checksums(str(tmp_path / "3"))


def test_overwrite_replaces_the_step_whole_after_it_verified(model, tmp_path):
    model.save_pretrained(3, str(tmp_path))
    doubled = scaled(tiny_model(tiny_config(), tiny_batch()), 2.0)
    doubled.save_pretrained(3, str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3"]  # no staging or retired step left
    assert verify_checksums(str(tmp_path / "3"))
    loaded = OctoModel.load_pretrained(str(tmp_path), 3)
    for got, want in zip(params(loaded), params(doubled), strict=True):
        np.testing.assert_array_equal(got, want)


def test_another_models_tokenizer_is_refused(tmp_path):
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from tests.inference import conftest as inference

    language = write_tiny_t5_checkpoint(str(tmp_path / "t5"))
    checkpoints = tmp_path / "checkpoints"
    inference.host_initialized_model(inference.tiny_config(language)).save_pretrained(
        3, str(checkpoints)
    )
    other = tmp_path / "other_t5"
    shutil.copytree(tmp_path / "t5", other)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    before = tree_digest(checkpoints)
    model = inference.host_initialized_model(inference.tiny_config(str(other)))
    with pytest.raises(FileExistsError, match="another model's tokenizer.*config.json"):
        model.save_pretrained(4, str(checkpoints))
    assert tree_digest(checkpoints) == before
    assert verify_checksums(str(checkpoints / "3"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("native") / "octo_small"
    convert_octo(str(FIXTURE / "octo_tiny"), str(FIXTURE / "tiny_t5"), str(out))
    return out


def test_a_conversion_into_a_directory_holding_a_checkpoint_is_refused(converted, tmp_path):
    """A rerun over an earlier output, or --out at a training run's checkpoints/, is refused
    before anything is read; the steps there still verify."""
    target = tmp_path / "checkpoints"
    shutil.copytree(converted, target)
    before = tree_digest(target)
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        convert_octo(str(FIXTURE / "octo_tiny"), str(FIXTURE / "tiny_t5"), str(target))
    assert tree_digest(target) == before
    (step,) = [p for p in target.iterdir() if p.name.isdigit()]
    assert verify_checksums(str(step))


@pytest.mark.parametrize(
    "where, error",
    [
        ("octo", "overlaps it"),
        ("inside_octo", "overlaps it"),
        ("t5", "overlaps it"),
        ("file", "is a file"),
        ("under_file", "lies under the file"),
    ],
)
def test_bad_output_paths_are_named_before_anything_is_read(tmp_path, where, error, capsys):
    octo, t5 = tmp_path / "octo", tmp_path / "t5"
    shutil.copytree(FIXTURE / "octo_tiny", octo)
    shutil.copytree(FIXTURE / "tiny_t5", t5)
    (tmp_path / "a_file").write_text("x")
    out = {
        "octo": octo,
        "inside_octo": octo / "native",
        "t5": t5,
        "file": tmp_path / "a_file",
        "under_file": tmp_path / "a_file" / "native",
    }[where]
    before = tree_digest(tmp_path)
    argv = ["convert_octo.py", f"--octo_dir={octo}", f"--t5_dir={t5}", f"--out={out}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exited:
            convert_octo_script._cli()
    assert error in str(exited.value) and str(exited.value).startswith("error: --out")
    assert tree_digest(tmp_path) == before


def test_a_new_or_empty_output_directory_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "nested"):
        check_output_dir(str(FIXTURE / "octo_tiny"), str(FIXTURE / "tiny_t5"), str(out))
    assert not os.path.exists(tmp_path / "new")
