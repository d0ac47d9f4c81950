"""The batch a run builds its model and compiles its step for while the pipeline is traced in
a thread (`run_data.foreseen_batch`, from the config and the statistics) is the pipeline's own
batch: datasets of four proprio widths and one without proprio pad to the widest, or to the
config's width; a difference is named by its path. (A run whose foresight is wrong compiles
again for the pipeline's batch: tests/training/test_train.py.)"""

from __future__ import annotations

import dataclasses
import threading

import jax
import numpy as np
import pytest

import train
from octo_like.data.config import DatasetSource
from octo_like.data.pipeline import make_pipeline
from octo_like.data.prepare import prepare_datasets
from octo_like.data.rlds import ProcessShard
from octo_like.model.octo_model import _text_tokenizer
from octo_like.training.config import parse_train_config
from octo_like.training.run import run_data
from tests.data.oxe_cases import write_mix_datasets

# Proprio widths 4, 2, none and 6 after standardization; actions are 7-wide in all.
MIX = (
    "cmu_stretch",
    "language_table",
    "nyu_door_opening_surprising_effectiveness",
    "nyu_franka_play_dataset_converted_externally_to_rlds",
)


@pytest.fixture(scope="module")
def mix_dir(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("mix"))
    write_mix_datasets(directory, [(name, 1.0) for name in MIX])
    return directory


def _run_config(tmp_path, mix_dir: str, proprio_width: int | None):
    """The debug preset (as its command line parses) reading the four datasets, padding
    proprio to `proprio_width` (None: the widest)."""
    argv = ["train.py", "--config", "configs/pretrain.py:debug", "--workdir", str(tmp_path / "run")]
    config, workdir, _, _ = train.parse_command_line(argv)
    typed = parse_train_config(config, workdir, generated=train.simulated_datasets)
    run_data.prepare_synthetic_data(typed)  # the debug preset's tokenizer
    sources = tuple(DatasetSource(name, mix_dir) for name in MIX)
    trajectory = dataclasses.replace(typed.data.trajectory, max_proprio_dim=proprio_width)
    data = dataclasses.replace(
        typed.data,
        datasets=sources,
        trajectory=trajectory,
        statistics_cache_dir=str(tmp_path / "stats"),
    )
    return dataclasses.replace(typed, data=data)


def _pipeline_batch_spec(typed, prepared) -> dict:
    pipeline = make_pipeline(typed.data, ProcessShard(), prepared=prepared)
    model = type("Model", (), {"text_tokenizer": _text_tokenizer(typed.model.language)})()
    host = run_data.host_batch(pipeline.example_batch(), model)
    return run_data.device_batch_spec(host, typed.data.batch_size)


@pytest.mark.parametrize("proprio_width", [None, 10], ids=["widest", "configured"])
def test_the_foreseen_batch_is_the_pipelines(tmp_path, mix_dir, proprio_width):
    typed = _run_config(tmp_path, mix_dir, proprio_width)
    widths = []  # traced before the statistics are computed, then read from the cache
    prepared = [
        prepare_datasets(
            typed.data.datasets, typed.data, while_computing=lambda *w: widths.append(w)
        )
        for _ in range(2)
    ][-1]
    assert widths == [run_data.statistics_widths(prepared)] * 2, widths
    assert widths[0] == ([7] * 4, [4, 2, 0, 6]), widths  # unpadded
    foreseen = run_data.foreseen_batch(typed, *widths[0])
    assert foreseen["observation"]["proprio"].shape[-1] == (proprio_width or 6)
    assert run_data.batch_mismatch(foreseen, _pipeline_batch_spec(typed, prepared)) is None


def test_the_widths_are_told_while_the_statistics_are_still_being_computed(
    tmp_path, mix_dir, monkeypatch
):
    """A run compiles its step beside the statistics pass: `while_computing` is called before
    any statistics are computed (here each computation waits for it, or fails after 60 s)."""
    from octo_like.data import prepare

    told = threading.Event()
    compute = prepare.compute_and_cache_statistics

    def after_the_widths(*args, **kwargs):
        assert told.wait(timeout=60), "statistics computed before the widths were told"
        return compute(*args, **kwargs)

    monkeypatch.setattr(prepare, "compute_and_cache_statistics", after_the_widths)
    typed = _run_config(tmp_path, mix_dir, None)
    prepared = prepare_datasets(
        typed.data.datasets, typed.data, while_computing=lambda *widths: told.set()
    )
    assert [p.spec.name for p in prepared] == list(MIX)


def test_a_difference_is_named_by_its_path():
    spec = lambda shape, dtype=np.float32: jax.ShapeDtypeStruct(shape, np.dtype(dtype))
    foreseen = {"observation": {"proprio": spec((8, 2, 6))}, "action": spec((8, 2, 4, 7))}
    assert run_data.batch_mismatch(foreseen, foreseen) is None
    wider = {**foreseen, "observation": {"proprio": spec((8, 2, 8))}}
    assert run_data.batch_mismatch(foreseen, wider) == (
        "observation/proprio: foreseen float32[8, 2, 6], the pipeline's float32[8, 2, 8]"
    )
    extra = {**foreseen, "observation": {**foreseen["observation"], "timestep": spec((8, 2))}}
    assert "observation/timestep: in the pipeline's batches" in run_data.batch_mismatch(
        foreseen, extra
    )
    missing = {"action": foreseen["action"], "observation": {}}
    assert run_data.batch_mismatch(foreseen, missing) == (
        "observation/proprio: foreseen float32[8, 2, 6], absent from the pipeline's batches"
    )
