"""The benchmarks' logic, imported from the package (the scripts are flags and one call):
their batches, their rounding, and a flag refused before any model is built."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from octo_like.training.benchmarks import finetune_benchmark, model_benchmark
from octo_like.training.finetuning.finetune import MODES

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_slow_machine_ceiling_keeps_its_digits():
    """On a loaded 2-core machine the measured GEMM rate is ~0.04 TFLOP/s: rounded to one
    decimal it was 0.0 and the benchmark divided by it."""
    assert model_benchmark.significant(0.041237) == 0.04124
    assert model_benchmark.significant(3.2e-5) == 3.2e-5 > 0
    assert model_benchmark.significant(512.3456) == 512.3


def test_both_benchmarks_build_octos_layout_from_one_builder():
    options = model_benchmark.ModelBenchmarkOptions(batch=2, primary_size=32, wrist_size=16)
    ours = model_benchmark.example_batch(options, np.random.default_rng(3))
    theirs = finetune_benchmark.example_batch(2, 32, 16, 5, np.random.default_rng(3))
    assert ours["observation"]["image_primary"].shape == (2, 2, 32, 32, 3)
    assert ours["task"]["image_wrist"].shape == (2, 16, 16, 3)
    assert ours["action"].shape == (2, 2, 4, 7) and theirs["action"].shape == (2, 2, 4, 5)
    assert ours["action_pad_mask"].all() and ours["observation"]["timestep_pad_mask"].all()
    # Same seed, same sizes: the same images (the builders differ in instruction and actions).
    for group, key in (("observation", "image_primary"), ("task", "image_wrist")):
        np.testing.assert_array_equal(ours[group][key], theirs[group][key])
    assert ours["task"]["language_instruction"][0] == b"pick up the spoon"
    assert theirs["task"]["language_instruction"][0] == b"pick up the red block"


def test_finetune_benchmark_refuses_an_unknown_mode_by_name_before_building():
    options = finetune_benchmark.FinetuneBenchmarkOptions(modes=("full", "head_only"))
    assert options.modes == ("full", "head_only")
    with pytest.raises(ValueError, match=r"unknown mode\(s\) \['head_onyl'\]; choose from") as e:
        finetune_benchmark.FinetuneBenchmarkOptions(modes=("full", "head_onyl"))
    assert all(mode in str(e.value) for mode in MODES)
    # The script refuses it at once too (it used to build and save a model first).
    with pytest.raises(ValueError, match="head_onyl"):
        load_script("benchmark_finetune").main(["--modes", "head_onyl", "--sizes", "dummy"])


def test_the_model_benchmark_times_what_the_scale_presets_compute(tmp_path):
    """It built octo_like's own defaults (658 tokens, no repeated task tokens, another head
    time input), so accelerator figures described a model no preset trains."""
    import dataclasses

    from configs import pretrain
    from octo_like.training.config import parse_train_config

    config = pretrain.get_config("base,bridge")
    config.data_dir = str(tmp_path / "oxe")
    config.model.language.checkpoint_dir = str(tmp_path / "t5-base")
    preset = parse_train_config(config, str(tmp_path / "run")).model
    options = model_benchmark.ModelBenchmarkOptions(size="base", dtype="bf16")
    ours = model_benchmark.model_config(options, str(tmp_path / "t5-base"))
    differ = {f.name for f in dataclasses.fields(preset)
              if getattr(preset, f.name) != getattr(ours, f.name)}  # fmt: skip
    # the flags' choices, and the small text encoder's width that a T5 model never reads
    assert differ <= {"dtype", "attention", "remat", "scan_layers", "language"}, differ
    assert dataclasses.replace(ours.language, small_width=preset.language.small_width) == (
        preset.language
    )
