"""Fine-tuning recipe knobs the transfer study varies: re-initializing reused parameters
(``reinitialize``) and normalizing the new data with the pretrained checkpoint's statistics
(``statistics_from``), each accepted as users set it, then refused where it would mislead."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from configs import finetune as finetune_configs
from octo_like.config.typed import ConfigError
from octo_like.data import prepare
from octo_like.data.config import DataConfig, DatasetSource
from octo_like.data.oxe.spec import DatasetSpec
from octo_like.model.octo_model import OctoModel, action_statistics_entry
from octo_like.normalization import DatasetStatistics
from octo_like.training.finetuning.finetune import _check_reinitialize, reuse_parameters
from octo_like.training.finetuning.finetune_config import parse_finetune_config
from tests.training.test_finetune import NEW_ROBOT, tiny_batch, tiny_config, write_new_robot

MASK = (True,) * 4 + (False,)
NEW_ROBOT_SPEC = dict(
    image_keys=dict(primary="front"),
    proprio_key="joints",
    action_encoding="custom",
    action_normalization_mask=MASK,
    standardize="identity",
)


def statistics(action_dim: int = 5, proprio_dim: int = 3, scale: float = 1.0) -> dict:
    def array(dim):
        ramp = scale * np.arange(1, dim + 1, dtype=np.float32)
        return {"mean": ramp, "std": ramp, "min": -ramp, "max": ramp, "p01": -ramp, "p99": ramp}

    return DatasetStatistics.from_dict(
        {
            "action": array(action_dim),
            "proprio": array(proprio_dim),
            "num_transitions": 1234,
            "num_trajectories": 56,
        }  # fmt: skip
    ).to_dict()


# ---------------------------------------------------------------- reinitialize
def test_reinitialized_parameters_keep_their_fresh_values_and_are_reported():
    zeros, ones = (lambda *s: np.zeros(s, np.float32)), (lambda *s: np.ones(s, np.float32))
    new = {"head": {"kernel": zeros(2, 3)}, "trunk": {"kernel": zeros(4)}}
    old = {"head": {"kernel": ones(2, 3)}, "trunk": {"kernel": ones(4)}}
    merged, report = reuse_parameters(new, old)  # the default: both reused
    assert set(report.reused) == {"head/kernel", "trunk/kernel"} and not report.reinitialized
    merged, report = reuse_parameters(new, old, reinitialize=("^head/",))
    np.testing.assert_array_equal(merged["head"]["kernel"], np.zeros((2, 3)))
    np.testing.assert_array_equal(merged["trunk"]["kernel"], np.ones(4))
    assert dict(report.reinitialized) == {"head/kernel": (2, 3)}
    assert set(report.reused) == {"trunk/kernel"}
    assert report.initialized == {"head/kernel"}  # trains in every mode, as new weights do
    assert report.counts()["reinitialized"] == (1, 6)
    assert "reinitialized" in report.table()


def test_a_reinitialize_regex_that_finds_nothing_or_a_frozen_t5_is_refused():
    leaf = np.zeros(2, np.float32)
    params = {"head": {"proj": {"kernel": leaf}}, "transformer": {"x": {"kernel": leaf}},
              "language_encoder": {"embed": {"embedding": leaf}}}  # fmt: skip
    _check_reinitialize(("^head/", "^language_encoder/"), params, same_t5=False)  # learned text
    missing = r"config.reinitialize: pattern '\^haed/' matches no parameter(.|\n)*head/proj"
    with pytest.raises(ConfigError, match=missing):
        _check_reinitialize(("^haed/",), params, same_t5=False)
    with pytest.raises(ConfigError, match="frozen T5 language encoder"):
        _check_reinitialize(("^language_encoder/",), params, same_t5=True)


def test_a_config_reinitialize_regex_is_checked_before_any_weight_loads(tmp_path):
    pretrained = save_checkpoint(tmp_path, {})
    config = new_robot_config(pretrained, tmp_path)
    config.reinitialize = ("^head/",)
    _, source = parse_finetune_config(config, str(tmp_path))
    assert source.reinitialize == ("^head/",)
    config.reinitialize = ("^head/(",)
    with pytest.raises(ConfigError, match=r"config.reinitialize: invalid regex '\^head/\('"):
        parse_finetune_config(config, str(tmp_path))


# ---------------------------------------------------------------- statistics_from
def save_checkpoint(tmp_path, entries: dict) -> str:
    """A tiny pretrained model whose checkpoint holds `entries` as its dataset statistics."""
    model = OctoModel.from_config(
        tiny_config(action_dim=5), tiny_batch(action_dim=5), _key(), entries
    )
    directory = str(tmp_path / "pretrained")
    model.save_pretrained(0, directory)
    return directory


def _key(seed: int = 0):
    import jax

    return jax.random.key(seed)


def new_robot_config(pretrained: str, tmp_path):
    config = finetune_configs.get_config("full,goal")  # the tiny model reads no language
    config.model.goal_image_cameras = ("primary",)
    config.pretrained_path = pretrained
    config.dataset.name = NEW_ROBOT
    config.dataset.location = str(tmp_path / "data")
    config.data.extra_specs = {NEW_ROBOT: dict(NEW_ROBOT_SPEC)}
    return config


def test_statistics_from_the_checkpoint_fix_the_new_datas_normalization(tmp_path):
    pretrained_stats = statistics(scale=3.0)
    pretrained = save_checkpoint(
        tmp_path, {NEW_ROBOT: action_statistics_entry(pretrained_stats, "normal", MASK)}
    )
    config = new_robot_config(pretrained, tmp_path)
    typed, _ = parse_finetune_config(config, str(tmp_path))
    assert typed.data.fixed_statistics == {}  # the default: the new data's own
    config.statistics_from = "pretrained"
    typed, _ = parse_finetune_config(config, str(tmp_path))
    assert dict(typed.data.fixed_statistics) == {NEW_ROBOT: pretrained_stats}

    # The data layer then normalizes with them: neither its own read nor computed.
    location = write_new_robot(str(tmp_path / "data"))
    source = DatasetSource(NEW_ROBOT, location)
    specs = {NEW_ROBOT: DatasetSpec.from_dict({"name": NEW_ROBOT, **NEW_ROBOT_SPEC})}
    cache = str(tmp_path / "stats")
    data = DataConfig(datasets=(source,), extra_specs=specs, statistics_cache_dir=cache)
    own = prepare.prepare_datasets([source], data)[0].statistics
    assert own.num_trajectories == 6  # write_new_robot's train split
    fixed = DataConfig(datasets=(source,), extra_specs=specs, statistics_cache_dir=cache,
                       fixed_statistics={NEW_ROBOT: pretrained_stats})  # fmt: skip
    (prepared,) = prepare.prepare_datasets([source], fixed)
    assert prepared.statistics.to_dict() == pretrained_stats != own.to_dict()

    wrong_width = DataConfig(datasets=(source,), extra_specs=specs, statistics_cache_dir=cache,
                             fixed_statistics={NEW_ROBOT: statistics(action_dim=7)})  # fmt: skip
    with pytest.raises(ValueError, match=rf"'{NEW_ROBOT}'.*action of width 7.*has width 5"):
        prepare.prepare_datasets([source], wrong_width)
    with pytest.raises(ValueError, match=r"fixed_statistics names dataset\(s\) \['other'\]"):
        DataConfig(datasets=(source,), fixed_statistics={"other": pretrained_stats})


def test_statistics_the_checkpoint_cannot_supply_as_asked_are_refused(tmp_path):
    entry = action_statistics_entry(statistics(), "normal", MASK)
    pretrained = save_checkpoint(tmp_path, {NEW_ROBOT: entry, "other_robot": entry})
    config = new_robot_config(pretrained, tmp_path)
    config.statistics_from = "pretrained:other_robot"  # another dataset's, same units: accepted
    typed, _ = parse_finetune_config(config, str(tmp_path))
    assert list(typed.data.fixed_statistics) == [NEW_ROBOT]
    for choice, message in [
        ("pretrained:missing", r"no statistics of dataset 'missing' \(it has \['new_robot', "),
        ("pretrain", "'pretrain' is none of 'data', 'pretrained', 'pretrained:NAME'"),
        ("pretrained:", "none of"),
    ]:
        config.statistics_from = choice
        with pytest.raises(ConfigError, match=message):
            parse_finetune_config(config, str(tmp_path))
    config.statistics_from = "pretrained"
    config.data.normalization = "bounds"
    with pytest.raises(ConfigError, match="'normal' in pretraining, this run .*'bounds'"):
        parse_finetune_config(config, str(tmp_path))
    other_mask = save_checkpoint(
        tmp_path / "b", {NEW_ROBOT: action_statistics_entry(statistics(), "normal", (True,) * 5)}
    )
    config = new_robot_config(other_mask, tmp_path)
    config.statistics_from = "pretrained"
    with pytest.raises(ConfigError, match="action normalization mask"):
        parse_finetune_config(config, str(tmp_path))


def test_a_reinitialized_head_starts_from_the_new_models_draw(tmp_path):
    """Through the fine-tuning initializer: with ``^head/`` the head equals a fresh model's of
    the same seed, and the trunk the pretrained one's."""
    from octo_like.training.finetuning.finetune import FinetuneSource, PretrainedInitializer
    from octo_like.training.finetuning.finetune_config import read_pretrained

    pretrained = save_checkpoint(tmp_path, {})
    info = read_pretrained(pretrained)
    batch = tiny_batch(action_dim=5)
    source = FinetuneSource(pretrained, info.step, "full", "goal", True, ("^head/",))
    lines = []
    initial = PretrainedInitializer(source, info.config, echo=lines.append)(batch, _key(1), {})
    fresh = OctoModel.from_config(info.config, batch, _key(1))
    base = OctoModel.load_pretrained(pretrained)
    got, new, old = (
        nnx.to_flat_state(nnx.state(m.module, nnx.Param)) for m in (initial.model, fresh, base)
    )
    got, new, old = ({"/".join(map(str, k)): v.value for k, v in s} for s in (got, new, old))
    heads = [p for p in got if p.startswith("head/")]
    assert any(not np.array_equal(new[p], old[p]) for p in heads)  # the two draws differ
    for path, value in got.items():
        expected = new[path] if path.startswith("head/") else old[path]
        np.testing.assert_array_equal(value, expected, err_msg=path)
    assert "reinitialized" in lines[0]
