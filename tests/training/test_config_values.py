"""A misspelled config *value* fails before any work, naming the valid choices, and leaves no
workdir behind (a misspelled key already fails at parse time with the closest name)."""

from __future__ import annotations

import time

import pytest

import train
from octo_like.config.typed import ConfigError

CASES = [
    ("--config.model.head.kind=difusion", "action head kind 'difusion'", "diffusion"),
    ("--config.model.transformer=tinyy", "transformer size 'tinyy'", "tiny"),
    ("--config.model.attention=flsh", "attention implementation 'flsh'", "einsum"),
    ("--config.model.dtype=bf16", "dtype 'bf16'", "bfloat16"),
    ("--config.model.remat=ful", "remat policy 'ful'", "full"),
]


@pytest.mark.parametrize(("override", "named", "choice"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_value_fails_fast_and_writes_nothing(tmp_path, override, named, choice):
    workdir = tmp_path / "run"
    config, workdir_flag, _, _ = train.parse_command_line(
        ["train.py", "--config", "configs/pretrain.py:debug", "--workdir", str(workdir), override]
    )
    started = time.perf_counter()
    with pytest.raises((ConfigError, ValueError), match="choices") as raised:
        train.main(config, workdir_flag)
    assert named in str(raised.value) and choice in str(raised.value)
    assert time.perf_counter() - started < 30  # no model was built, no data read
    assert not workdir.exists()


def test_an_unknown_mix_is_named_before_a_missing_data_dir(tmp_path):
    config, workdir, _, _ = train.parse_command_line(
        ["train.py", "--config", "configs/pretrain.py:small", "--workdir", str(tmp_path / "run"),
         "--config.mix=oxe_magic_soop"]
    )  # fmt: skip
    with pytest.raises(KeyError, match="oxe_magic_soup"):
        train.main(config, workdir)
    assert not (tmp_path / "run").exists()


def test_an_unknown_preset_names_the_presets():
    with pytest.raises(Exception, match="laptop_long"):
        train.parse_command_line(["train.py", "--config", "configs/pretrain.py:tinyy"])


@pytest.mark.parametrize(
    ("override", "named"),
    [("--config.model.haed.kind=l1",
      "unknown config key 'haed' in --config.model.haed.kind=l1; did you mean "
      "--config.model.head.kind"),
     ("--config.data.batch_sise=8", "did you mean --config.data.batch_size"),  # a leaf key
     ("--config.batch_sise=8", "did you mean --config.data.batch_size"),  # at another level
     ("--config.num_steps=many", "num_steps=many")],
)  # fmt: skip
def test_a_typo_key_or_unparsable_value_is_a_config_error(override, named):
    with pytest.raises(ConfigError, match=named):
        train.parse_command_line(["train.py", "--config", "configs/pretrain.py:debug", override])
