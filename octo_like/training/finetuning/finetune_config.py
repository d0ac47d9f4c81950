"""A fine-tuning config (configs/finetune.py) -> the loop's `TrainConfig` + a `FinetuneSource`.

The fine-tuning config holds the keys of a pretraining config, except ``mix`` / ``data_dir``
(the data is named by ``dataset``), plus::

    pretrained_path, pretrained_step, mode, task, save_frozen_params, lora, dataset,
    reinitialize, statistics_from

``reinitialize``: regexes of parameter paths (e.g. ``^head/``, ``^language_encoder/``) that keep
their fresh initialization although the checkpoint has them. ``statistics_from``: ``data`` (the
new data's own statistics normalize it), ``pretrained`` (the checkpoint's statistics of the
dataset of the same name: reused weights see actions and proprio scaled as in pretraining) or
``pretrained:NAME`` (those of dataset NAME in the checkpoint).

Its ``model`` section and ``data.frame.cameras`` are read against the pretrained model: a value
left None is the pretrained model's (`finetune_overrides.py` says per key).

A dataset input the model will not read (a camera or proprio key its spec maps) is logged as a
WARNING naming it with the override that adds it (`finetune_inputs.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any

from octo_like import storage
from octo_like.config.typed import ConfigError, build, to_plain
from octo_like.data.config import DatasetSource
from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.data.oxe.spec import DatasetSpec
from octo_like.model.checkpoint_layout import read_model_metadata, read_only_manager
from octo_like.model.config import LoraConfig, ModelConfig
from octo_like.training.config import TrainConfig
from octo_like.training.finetuning.finetune import MODES, FinetuneSource
from octo_like.training.finetuning.finetune_inputs import unread_inputs
from octo_like.training.finetuning.finetune_overrides import (
    frame_with_sizes,
    read_cameras,
    resolve_model,
)
from octo_like.training.optim import masks

log = logging.getLogger(__name__)

TASKS = ("language", "goal", "multimodal")
_GENERATED = {"mix", "data_dir", "simulation"}  # set by the parser, not the config


@dataclasses.dataclass(frozen=True)
class _FinetuneKeys:
    """The fine-tuning-only keys, validated (typos fail with the closest name)."""

    pretrained_path: str
    mode: str
    task: str
    dataset: DatasetSource
    pretrained_step: int | None = None
    save_frozen_params: bool = True
    lora: LoraConfig = LoraConfig()
    reinitialize: tuple[str, ...] = ()
    statistics_from: str = "data"


@dataclasses.dataclass(frozen=True)
class PretrainedInfo:
    """What the parser reads from the pretrained checkpoint (JSON items only, no weights)."""

    checkpoint_dir: str
    step: int
    config: ModelConfig
    input_spec: dict
    dataset_names: tuple[str, ...] = ()  # whose statistics it holds: the datasets it trained on
    # {dataset name: its checkpoint entry (statistics, normalization, action normalization mask)}
    statistics: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def read_pretrained(path: str, step: int | None = None) -> PretrainedInfo:
    """The pretrained model's config and input spec. `path`: a checkpoint directory
    (``<workdir>/checkpoints``) or a run's workdir holding one; step None: the latest."""
    if not path:
        raise ConfigError("pretrained_path is empty: set --config.pretrained_path=CHECKPOINT_DIR")
    path = storage.absolute(path)  # a local path or a URL
    nested = storage.join(path, "checkpoints")
    if not _steps(path) and _steps(nested):
        path = nested
    steps = _steps(path)
    if not steps:
        raise ConfigError(
            f"pretrained_path {path!r} is not a checkpoint directory (no complete <step>/ "
            "directory with a model config); pass e.g. runs/laptop/checkpoints"
        )
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ConfigError(f"pretrained_step {step} not in {path} (steps: {steps})")
    with read_only_manager(path) as manager:
        metadata = read_model_metadata(manager, path, step)
    statistics = dict(metadata.dataset_statistics or {})
    return PretrainedInfo(
        path, step, metadata.config, metadata.input_spec, tuple(statistics), statistics
    )


def _steps(path: str) -> list[int]:
    return sorted(
        int(name)
        for name in storage.listdir(path)
        if name.isdigit() and storage.isdir(storage.join(path, name, "config"))
    )


def parse_finetune_config(config: Any, workdir: str) -> tuple[TrainConfig, FinetuneSource]:
    """Locked ConfigDict (or mapping) -> (TrainConfig for the loop, FinetuneSource)."""
    del workdir  # the data is named explicitly; nothing is generated into the workdir
    raw = to_plain(config)
    own_keys = [f.name for f in dataclasses.fields(_FinetuneKeys)]
    valid = set(own_keys) | {f.name for f in dataclasses.fields(TrainConfig)} - _GENERATED
    unknown = sorted(set(raw) - valid)
    if unknown:
        described = [
            f"{key!r}"
            + "".join(f" (did you mean {c!r}?)" for c in get_close_matches(key, valid, 1))
            for key in unknown
        ]
        raise ConfigError(f"config: unknown key(s) {', '.join(described)}")
    own = {k: raw.pop(k) for k in own_keys if k in raw}
    keys = build(_FinetuneKeys, own, "config")
    if keys.mode not in MODES:
        raise ConfigError(f"config.mode: unknown mode {keys.mode!r}; choose from {MODES}")
    if keys.task not in TASKS:
        raise ConfigError(f"config.task: unknown task {keys.task!r}; choose from {TASKS}")
    if not keys.dataset.name or not keys.dataset.location:
        raise ConfigError(
            "config.dataset needs a name (a registry entry or a data.extra_specs key) and a "
            "location (a TFDS directory): --config.dataset.name=... --config.dataset.location=..."
        )
    pretrained = read_pretrained(keys.pretrained_path, keys.pretrained_step)

    model = resolve_model(raw.get("model", {}), pretrained.config)
    data = dict(raw.get("data", {}))
    data["datasets"] = [dataclasses.asdict(keys.dataset)]
    data["extra_specs"] = _extra_specs(data.get("extra_specs") or {})
    data["fixed_statistics"] = _fixed_statistics(keys, pretrained, data)
    data["frame"] = frame_with_sizes(
        data.get("frame", {}), pretrained.config, pretrained.input_spec, read_cameras(model)
    )
    trajectory = data.get("trajectory", {})
    model["window"] = trajectory.get("window", model["window"])
    model["action_horizon"] = trajectory.get("action_horizon", model["action_horizon"])
    model["lora"] = dataclasses.asdict(keys.lora) if keys.mode == "lora" else None
    changed = config_diff(pretrained.config.to_dict(), model)
    if changed:  # Octo's check_config_diff: say what the fine-tuned model changes
        log.info("the model differs from the pretrained one in:\n  %s", "\n  ".join(changed))
    raw.update(data=data, model=model, mix="finetune", data_dir="")
    typed = build(TrainConfig, raw, "config")
    _check_task(keys.task, typed)
    for unread in unread_inputs(typed):
        log.warning(unread.message())
    source = FinetuneSource(
        pretrained_path=pretrained.checkpoint_dir,
        pretrained_step=pretrained.step,
        mode=keys.mode,
        task=keys.task,
        save_frozen_params=keys.save_frozen_params,
        reinitialize=_checked_regexes(keys.reinitialize, "config.reinitialize"),
    )
    return typed, source


def config_diff(pretrained: Mapping[str, Any], model: Mapping[str, Any], prefix="model") -> list:
    """``["model.KEY: OLD -> NEW", ...]`` for every leaf of the two configs that differs, keys
    present in one only included (Octo's ``check_config_diff``), in key order."""
    lines = []
    for key in sorted(set(pretrained) | set(model)):
        name, old, new = (
            f"{prefix}.{key}",
            pretrained.get(key, "<absent>"),
            model.get(key, "<absent>"),
        )
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            lines += config_diff(old, new, name)
        elif _plain(old) != _plain(new):
            lines.append(f"{name}: {old!r} -> {new!r}")
    return lines


def _plain(value: Any) -> Any:
    """Lists and tuples compare alike (a config's tuple is its JSON's list)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _checked_regexes(patterns: tuple[str, ...], name: str) -> tuple[str, ...]:
    """`patterns`, each checked to compile (a typo'd regex fails before any weight loads)."""
    try:
        masks.compile_patterns(patterns, name)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from error
    return tuple(patterns)


def _fixed_statistics(
    keys: _FinetuneKeys, pretrained: PretrainedInfo, data: Mapping[str, Any]
) -> dict[str, Any]:
    """``data.fixed_statistics`` of `keys.statistics_from` (module docstring): {} for the new
    data's own, else the checkpoint's statistics of the named dataset, whose normalization and
    action mask must be the new data's (else the reused weights would see other units)."""
    choice = keys.statistics_from
    if choice == "data":
        return {}
    kind, _, name = choice.partition(":")
    if kind != "pretrained" or (choice != "pretrained" and not name):
        raise ConfigError(
            f"config.statistics_from: {choice!r} is none of 'data', 'pretrained', 'pretrained:NAME'"
        )
    name = name or keys.dataset.name
    if name not in pretrained.statistics:
        raise ConfigError(
            f"config.statistics_from: the checkpoint {pretrained.checkpoint_dir} holds no "
            f"statistics of dataset {name!r} (it has {sorted(pretrained.statistics)})"
        )
    entry = pretrained.statistics[name]
    normalization = str(data.get("normalization", "normal"))
    if entry["normalization"] != normalization:
        raise ConfigError(
            f"config.statistics_from: dataset {name!r} was normalized {entry['normalization']!r} "
            f"in pretraining, this run normalizes {normalization!r} (set data.normalization)"
        )
    specs = {k: DatasetSpec.from_dict(v) for k, v in data["extra_specs"].items()}
    try:
        mask = get_dataset_spec(keys.dataset.name, specs).action_normalization_mask
    except ValueError as error:
        raise ConfigError(f"config.dataset.name: {error}") from error
    mask = None if mask is None else list(mask)
    if entry["action_normalization_mask"] != mask:
        raise ConfigError(
            f"config.statistics_from: dataset {name!r}'s action normalization mask "
            f"{entry['action_normalization_mask']} is not {keys.dataset.name!r}'s {mask}"
        )
    return {keys.dataset.name: entry["statistics"]}


def _extra_specs(specs: Mapping[str, Any]) -> dict[str, Any]:
    """`data.extra_specs` entries may omit ``name`` (the key); checked here, early."""
    out = {}
    for name, spec in specs.items():
        spec = {"name": name, **dict(spec)}
        try:
            DatasetSpec.from_dict(spec)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config.data.extra_specs.{name}: {error}") from error
        out[name] = spec
    return out


def _check_task(task: str, config: TrainConfig) -> None:
    model, trajectory = config.model, config.data.trajectory
    if task in ("language", "multimodal") and model.language.encoder == "none":
        raise ConfigError(
            f"task {task!r} needs a language encoder, but model.language.encoder is 'none'"
        )
    if task in ("goal", "multimodal"):
        fused = any(t.goal_fusion for t in model.image_tokenizers) or model.goal_image_cameras
        if not (trajectory.goal_relabeling and fused):
            raise ConfigError(
                f"task {task!r} needs goal images: data.trajectory.goal_relabeling=True and a "
                "camera with goal_fusion (or model.goal_image_cameras)"
            )
