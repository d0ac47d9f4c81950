"""Nothing a user's data holds is dropped silently (issue 40, item 5): a fine-tuning run names
every camera and proprio key its dataset spec maps that the model will not read, with the
command-line override that adds it; that override makes the model read it; and the config the
episode converter writes (README quick start 2) reads every camera and the state."""

from __future__ import annotations

import importlib.util
import logging
import shlex

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import finetune
from octo_like.config.typed import ConfigError
from octo_like.model.config import LanguageConfig
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.training.finetuning.finetune import PretrainedInitializer
from octo_like.training.finetuning.finetune_config import parse_finetune_config
from octo_like.training.finetuning.finetune_inputs import unread_inputs
from tests.documented import DATA_GUIDE, REPO, documented_commands, fenced_block
from tests.training.test_finetune import tiny_batch, tiny_config, tiny_model

WARNING_LOGGER = "octo_like.training.finetuning.finetune_config"

CONFIG_FILE = """
from configs import finetune


def get_config(arg: str = "full,language"):
    c = finetune.get_config(arg)
    c.pretrained_path = {pretrained!r}
    c.dataset.name = "my_robot"
    c.dataset.location = "/data/my_robot/1.0.0"  # parsing does not open it
    c.data.extra_specs = {{"my_robot": dict(
        image_keys=dict(primary="front", wrist={wrist!r}), proprio_key={proprio!r},
        action_encoding="custom", standardize="identity")}}
    c.model.action_dim = 3
    return c
"""


def with_instructions(batch: dict) -> dict:
    batch["task"]["language_instruction"] = np.array([b"pick up the cup"] * 2, dtype=object)
    batch["task"]["pad_mask_dict"]["language_instruction"] = np.ones(2, bool)
    return batch


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    """A cheap pretrained checkpoint like `runs/laptop`'s: one `primary` camera (32x32), no
    proprio, a small language encoder; a dummy transformer (tests/training/test_finetune.py's
    tiny model)."""
    root = tmp_path_factory.mktemp("pretrained")
    t5 = write_tiny_t5_checkpoint(str(root / "t5"))
    language = LanguageConfig(encoder="small", checkpoint_dir=t5, small_width=32, small_depth=1)
    model = tiny_model(tiny_config(language=language), with_instructions(tiny_batch()))
    model.save_pretrained(0, str(root / "checkpoints"))
    return str(root / "checkpoints")


def config_file(tmp_path, pretrained: str, *, wrist: str | None, proprio: str | None) -> str:
    path = tmp_path / f"finetune_{wrist}_{proprio}.py"
    path.write_text(CONFIG_FILE.format(pretrained=pretrained, wrist=wrist, proprio=proprio))
    return str(path)


def parse(argv: list[str], caplog) -> tuple:
    """(typed config, source, warnings the parse logged) of a finetune.py command line."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        config, workdir, _, _ = finetune.parse_command_line(argv)
        typed, source = parse_finetune_config(config, workdir)
    warnings = [r.getMessage() for r in caplog.records if r.name == WARNING_LOGGER]
    return typed, source, warnings


def batch_with(typed, proprio_dim: int = 6) -> dict:
    """An example batch holding every camera the run's frames load, and proprio."""
    batch = tiny_batch(action_dim=typed.model.action_dim, proprio=proprio_dim)
    observation = batch["observation"]
    for camera, transform in typed.data.frame.cameras.items():
        shape = (2, 2, *transform.size, 3)
        observation[f"image_{camera}"] = np.full(shape, 90, np.uint8)
        observation["pad_mask_dict"][f"image_{camera}"] = np.ones((2, 2), bool)
    return with_instructions(batch)


def test_unread_cameras_and_proprio_are_named_with_the_lines_that_add_them(
    tmp_path, pretrained, caplog
):
    command = ["finetune.py", "--workdir", str(tmp_path / "run"), "--config"]
    # Healthy first: the dataset maps only what the model reads; no warning.
    healthy = config_file(tmp_path, pretrained, wrist=None, proprio=None)
    typed, _, warnings = parse([*command, healthy], caplog)
    assert warnings == [] and unread_inputs(typed) == []
    assert typed.model.cameras == ("primary",) and list(typed.data.frame.cameras) == ["primary"]

    # A wrist camera and a 6-dim state the model would not read: each named, with the lines.
    extra = config_file(tmp_path, pretrained, wrist="wrist", proprio="state")
    typed, _, warnings = parse([*command, extra], caplog)
    assert len(warnings) == 1, warnings
    message = warnings[0]
    assert "'my_robot'" in message
    assert "camera 'wrist' (dataset key 'wrist')" in message
    assert "proprio 'state'" in message
    camera_line = "--config.model.image_tokenizers=\"({'camera': 'primary'}, {'camera': 'wrist'})\""
    proprio_line = "--config.model.proprio=\"{'mode': 'linear'}\""
    assert camera_line in message.splitlines()[-3] and proprio_line in message.splitlines()[-2]
    assert typed.model.cameras == ("primary",) and typed.model.proprio is None  # the old way

    # The lines, typed as shown, make the model read both: no warning, the frames load the
    # wrist camera (at the pretrained camera's size), and the model gets new tokenizers.
    overrides = shlex.split(f"{camera_line} {proprio_line}")
    typed, source, warnings = parse([*command, extra, *overrides], caplog)
    assert warnings == []
    assert typed.model.cameras == ("primary", "wrist") and typed.model.proprio is not None
    assert typed.data.frame.cameras["wrist"].size == (32, 32)
    initializer = PretrainedInitializer(source, typed.model, echo=lambda text: None)
    initial = initializer(batch_with(typed), jax.random.key(0), {})
    new = initializer.report.new
    assert any(p.startswith("image_tokenizers/wrist/") for p in new), sorted(new)
    assert any(p.startswith("proprio_tokenizer/") for p in new), sorted(new)
    assert {"image_wrist", "proprio"} <= set(initial.model.input_spec["observation"])


def test_overrides_of_the_wrong_kind_are_named(tmp_path, pretrained, caplog):
    command = ["finetune.py", "--workdir", str(tmp_path / "run"), "--config"]
    extra = config_file(tmp_path, pretrained, wrist="wrist", proprio="state")
    typed, _, _ = parse([*command, extra, "--config.model.proprio={'mode': 'per_dim'}"], caplog)
    assert typed.model.proprio.mode == "per_dim"  # the healthy form first
    with pytest.raises(ConfigError, match=r"config\.model\.proprio: 'linear' is neither"):
        parse([*command, extra, "--config.model.proprio=linear"], caplog)
    with pytest.raises(ConfigError, match=r"config\.model\.image_tokenizers: .* not a tuple"):
        parse([*command, extra, "--config.model.image_tokenizers={'camera': 'wrist'}"], caplog)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    with tfds.core.registered.skip_registration():
        spec.loader.exec_module(module)
    return module


def test_the_quick_start_config_the_converter_writes_reads_every_camera_and_the_state(
    tmp_path, pretrained, caplog, monkeypatch
):
    """README quick start 2 on the example episodes (cameras front and wrist, a 6-dim state):
    the converter writes data/README.md's config file exactly, and the quick start's
    finetune.py command with it reads front, wrist and state, with no warning."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    _load("make_example_episodes").write_example_episodes(
        str(tmp_path / "episodes"), num_npz=2, num_hdf5=1, length=(4, 6)
    )
    _load("convert_raw_episodes").main(
        ["--source", str(tmp_path / "episodes"), "--out", str(tmp_path / "tensorflow_datasets"),
         "--name", "my_robot", "--spec_out", str(tmp_path / "my_robot_spec.json"),
         "--config_out", "configs/finetune_my_robot.py"]
    )  # fmt: skip
    written = (tmp_path / "configs" / "finetune_my_robot.py").read_text()
    assert written == fenced_block(DATA_GUIDE, "# configs/finetune_my_robot.py")

    quick_start = [
        shlex.split("finetune.py" + text)
        for where, _, text in documented_commands(["README.md"], r"python finetune\.py(?= )")
        if "finetune_my_robot.py" in text
    ]
    assert len(quick_start) == 2  # the full run and the one of a few minutes
    for argv in quick_start:
        argv = [a.replace("runs/laptop/checkpoints", pretrained) for a in argv]
        typed, _, warnings = parse(argv, caplog)
        assert warnings == []
        assert typed.model.cameras == ("primary", "wrist") and typed.model.proprio is not None
        spec = typed.data.extra_specs["my_robot"]
        assert dict(spec.image_keys) == {"primary": "front", "secondary": None, "wrist": "wrist"}
        assert spec.proprio_key == "state" and typed.model.action_dim == 7
    assert typed.num_steps == 300 and typed.optimizer.warmup_steps == 30
    assert (typed.data.batch_size, quick_start[0].count("--config.num_steps=300")) == (64, 0)


def test_a_converter_config_needs_the_spec_it_reads(capsys):
    with pytest.raises(SystemExit):
        _load("convert_raw_episodes").parse_args(
            ["--source", "x", "--out", "y", "--name", "z", "--config_out", "c.py"]
        )
    assert "--config_out needs --spec_out" in capsys.readouterr().err


def test_a_lerobot_directory_goes_through_quick_start_2(tmp_path, pretrained, caplog, monkeypatch):
    """README quick start 2 from a LeRobot directory (the fixture LeRobot 0.4.4 wrote: cameras
    observation.images.front and .wrist, a 6-dim observation.state, 6-dim joint actions): the
    converter's spec and config make the documented finetune.py command read both cameras and
    the state, with the action dim and names taken from the dataset, and no warning."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    source = REPO / "tests" / "fixtures" / "lerobot" / "v30_av1"
    _load("convert_lerobot").main(
        ["--source", str(source), "--out", str(tmp_path / "tensorflow_datasets"),
         "--name", "my_so101", "--spec_out", str(tmp_path / "my_so101_spec.json"),
         "--config_out", "configs/finetune_my_so101.py", "--workers", "1"]
    )  # fmt: skip
    command = next(
        text
        for _, _, text in documented_commands(["README.md"], r"python finetune\.py(?= )")
        if "finetune_my_robot.py" in text
    )
    command = command.replace("my_robot", "my_so101")
    argv = shlex.split("finetune.py" + command.replace("runs/laptop/checkpoints", pretrained))
    typed, _, warnings = parse(argv, caplog)
    assert warnings == []
    assert typed.model.cameras == ("primary", "wrist") and typed.model.proprio is not None
    spec = typed.data.extra_specs["my_so101"]
    assert dict(spec.image_keys) == {"primary": "front", "secondary": None, "wrist": "wrist"}
    assert spec.proprio_key == "state" and typed.model.action_dim == 6
    assert spec.action_encoding.value == "custom"  # joint positions: not Octo's eef deltas
