"""The scale presets parse into what they claim: frozen T5 from a given directory, a mix
balanced by dataset size, bfloat16 on accelerators; a missing T5 directory names the flag."""

from __future__ import annotations

import pytest

from configs import pretrain
from octo_like.config.typed import ConfigError
from octo_like.data.oxe.mixes import resolve_mix
from octo_like.model.config import OCTO_DIFFUSION_BEHAVIOURS, OCTO_MODEL_BEHAVIOURS, ModelConfig
from octo_like.training.config import parse_train_config
from octo_like.training.run.train_program import FROZEN_LANGUAGE_ENCODER, optimizer_config


@pytest.mark.parametrize("preset", ["small,oxe_magic_soup", "base,bridge"])
def test_scale_presets_parse_with_frozen_t5_and_size_balancing(preset, tmp_path):
    config = pretrain.get_config(preset)
    config.data_dir = str(tmp_path / "oxe")
    config.model.language.checkpoint_dir = str(tmp_path / "t5-base")
    typed = parse_train_config(config, str(tmp_path / "run"))
    assert typed.model.language.encoder == "t5" and typed.model.language.frozen
    assert typed.model.language.checkpoint_dir == str(tmp_path / "t5-base")
    assert FROZEN_LANGUAGE_ENCODER in optimizer_config(typed).frozen
    assert typed.data.balance_by_size
    assert typed.model.dtype == "auto"
    assert len(typed.data.datasets) == len(resolve_mix(preset.split(",")[1]))
    # Octo-1.5's behaviours, every one (the equality test in tests/model/test_octo_import.py
    # shows these are the values that compute Octo's outputs)
    for name, value in OCTO_MODEL_BEHAVIOURS.items():
        assert getattr(typed.model, name) == value, name
    for name, value in OCTO_DIFFUSION_BEHAVIOURS.items():
        assert typed.model.head.kwargs[name] == value, name


def test_a_scale_preset_without_t5_names_the_flag(tmp_path):
    config = pretrain.get_config("small,oxe_magic_soup")
    config.data_dir = str(tmp_path)
    with pytest.raises((ConfigError, ValueError), match="--config.model.language.checkpoint_dir"):
        parse_train_config(config, str(tmp_path / "run"))


@pytest.mark.parametrize("preset", ["debug", "laptop", "laptop_long", "laptop_broad"])
def test_cpu_presets_keep_their_small_encoder_and_plain_mixing(preset):
    config = pretrain.get_config(preset)
    assert config.model.language.encoder == "small" and not config.model.language.frozen
    assert not config.data.balance_by_size
    defaults = ModelConfig()
    for name in OCTO_MODEL_BEHAVIOURS:  # octo_like's own choices
        assert config.model[name] == getattr(defaults, name), name
    if preset == "laptop_broad":  # its simulation settings are the typed ones, held_out included
        from octo_like.training.config import SimulationDataConfig

        config.simulation.held_out = "family:door,window-open"
        typed = SimulationDataConfig(**config.simulation.to_dict())
        assert typed.held_out == "family:door,window-open" and typed.tasks == "all"
