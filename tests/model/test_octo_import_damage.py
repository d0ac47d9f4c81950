"""A damaged Octo or T5 directory is refused by convert_octo.py in one line naming the file and
the problem, before anything is written (issue 69 item 4); non-finite weights and malformed
statistics are refused before writing, not only by the loaders."""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import numpy as np
import pytest
from flax import serialization

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "octo15"
sys.path.insert(0, str(REPO / "scripts"))
import convert_octo as convert_octo_script  # noqa: E402

CHECKPOINT = "300000/default/checkpoint"


def run(octo, t5, out) -> str:
    """convert_octo.py's command line; returns its one-line refusal ('' when it converted)."""
    argv = ["convert_octo.py", f"--octo_dir={octo}", f"--t5_dir={t5}", f"--out={out}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        try:
            convert_octo_script._cli()
        except SystemExit as exited:
            return str(exited.code)
    return ""


@pytest.fixture
def dirs(tmp_path):
    shutil.copytree(FIXTURE / "octo_tiny", tmp_path / "octo")
    shutil.copytree(FIXTURE / "tiny_t5", tmp_path / "t5")
    return tmp_path / "octo", tmp_path / "t5"


def test_the_published_layout_converts(dirs, tmp_path):
    assert run(*dirs, tmp_path / "out") == ""
    assert (tmp_path / "out" / "300000" / "checksums.json").exists()


def truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: pathlib.Path) -> None:
    path.write_bytes(b"\xff\xfe garbage \x00" * 8)


def edit_json(path: pathlib.Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def nan_weight(octo: pathlib.Path) -> None:
    path = octo / CHECKPOINT
    tree = serialization.msgpack_restore(path.read_bytes())

    def first_float(node):
        for key, value in node.items():
            if isinstance(value, dict):
                if (found := first_float(value)) is not None:
                    return found
            elif np.issubdtype(np.asarray(value).dtype, np.floating) and np.size(value) > 1:
                return node, key
        return None

    node, key = first_float(tree)
    value = np.array(node[key])
    value.flat[0] = np.nan
    node[key] = value
    path.write_bytes(serialization.msgpack_serialize(tree))


def wrong_mask(octo: pathlib.Path) -> None:
    def change(statistics):
        name = next(iter(statistics))
        statistics[name]["action"]["mask"] = statistics[name]["action"]["mask"][:-2]

    edit_json(octo / "dataset_statistics.json", change)


def heads_wrong_type(octo: pathlib.Path) -> None:
    edit_json(octo / "config.json", lambda config: config["model"].update(heads="diffusion"))


# (what to damage, in which directory, the file the line names, a phrase of its problem)
DAMAGES = {
    "config truncated": (lambda o, t: truncate(o / "config.json"), "config.json", "not valid JSON"),
    "config garbage": (lambda o, t: garbage(o / "config.json"), "config.json", "not valid JSON"),
    "statistics truncated": (
        lambda o, t: truncate(o / "dataset_statistics.json"),
        "dataset_statistics.json",
        "not valid JSON",
    ),
    "example batch truncated": (
        lambda o, t: truncate(o / "example_batch.msgpack"),
        "example_batch.msgpack",
        "not a readable msgpack",
    ),
    "_METADATA garbage": (
        lambda o, t: garbage(o / "300000/default/_METADATA"),
        "_METADATA",
        "not valid JSON",
    ),
    "checkpoint truncated": (
        lambda o, t: truncate(o / CHECKPOINT),
        "default/checkpoint",
        "not a readable msgpack",
    ),
    "empty default": (
        lambda o, t: [p.unlink() for p in (o / "300000/default").iterdir()],
        "300000/default",
        "empty",
    ),
    "spiece truncated": (
        lambda o, t: truncate(t / "spiece.model"),
        "spiece.model",
        "not a sentencepiece model",
    ),
    "heads of the wrong type": (
        lambda o, t: heads_wrong_type(o),
        "config.json",
        "unexpected type",
    ),
    "NaN weight": (lambda o, t: nan_weight(o), "", "non-finite parameters"),
    "mask of the wrong length": (
        lambda o, t: wrong_mask(o),
        "dataset_statistics.json",
        "action statistics have lengths",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damage_is_named_in_one_line_and_nothing_is_written(dirs, tmp_path, damage):
    spoil, file, phrase = DAMAGES[damage]
    octo, t5 = dirs
    spoil(octo, t5)
    line = run(octo, t5, tmp_path / "out")
    assert line.startswith("error: ") and "\n" not in line.strip(), line
    assert file in line and phrase in line, line
    assert not (tmp_path / "out").exists()
