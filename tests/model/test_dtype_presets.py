"""Compute dtypes: `auto` means bfloat16 on accelerators and float32 on CPU; presets use it."""

from __future__ import annotations

import pytest

from configs import pretrain
from octo_like.model.config import ModelConfig, resolve_dtype


def test_auto_dtype_resolves_per_platform():
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "gpu") == "bfloat16"
    assert resolve_dtype("auto", "tpu") == "bfloat16"
    assert resolve_dtype("float32", "tpu") == "float32"
    with pytest.raises(ValueError, match="unknown dtype 'bf16'"):
        ModelConfig(dtype="bf16")


def test_old_boolean_remat_loads_and_typos_fail():
    assert ModelConfig.from_dict({"remat": True}).remat == "full"
    assert ModelConfig.from_dict({"remat": False}).remat == "none"
    with pytest.raises(ValueError, match="unknown remat policy 'dots'"):
        ModelConfig(remat="dots")
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        ModelConfig(attention="flash")


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_scale_presets_default_to_bfloat16_on_accelerators(preset):
    model = pretrain.get_config(f"{preset},bridge").model
    assert model.dtype == "auto" and model.attention == "auto" and model.remat == "none"
    config = ModelConfig(dtype=model.dtype)
    assert config.compute_dtype("gpu") == "bfloat16"
    assert config.compute_dtype("cpu") == "float32"


@pytest.mark.parametrize("preset", ["debug", "laptop"])
def test_cpu_presets_stay_float32(preset):
    assert pretrain.get_config(preset).model.dtype == "float32"
