"""An Octo-1.5 ``config.json`` read as data: its module specs become a `ModelConfig`.

Octo saves each component as a module spec ``{"module": "octo.model...", "name": CLASS,
"args": [], "kwargs": {...}}``. Only the specs Octo-1.5 publishes are understood (ImageTokenizer
over SmallStem16, LanguageTokenizer over a Hugging Face T5, DiffusionActionHead without MAP,
one action readout); anything else is refused by name, never guessed. Nothing from Octo is
imported.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from octo_like.model.config import (
    OCTO_DIFFUSION_BEHAVIOURS,
    OCTO_MODEL_BEHAVIOURS,
    HeadConfig,
    ImageTokenizerConfig,
    LanguageConfig,
    ModelConfig,
)
from octo_like.model.transformer import TRANSFORMER_PRESETS

# Octo's defaults for the arguments a config.json may leave out (facts of the v1.5 code).
SMALL_STEM_DEFAULTS = {
    "patch_size": 16,  # SmallStem16
    "features": (32, 96, 192, 384),
    "kernel_sizes": (3, 3, 3, 3),
    "strides": (2, 2, 2, 2),
    "padding": (1, 1, 1, 1),
    "num_features": 512,
    "img_norm_type": "default",
    "use_film": False,
}
DIFFUSION_DEFAULTS = {
    "use_map": False,
    "max_action": 5.0,
    "loss_type": "mse",
    "time_dim": 32,
    "num_blocks": 3,
    "dropout_rate": 0.0,
    "hidden_dim": 256,
    "use_layer_norm": True,
    "diffusion_steps": 20,
    "n_diffusion_samples": 1,
}


class OctoLayoutError(ValueError):
    """An Octo checkpoint this importer does not compute faithfully (named, never guessed)."""


@dataclasses.dataclass(frozen=True)
class OctoLayout:
    """What the importer read from config.json besides the ModelConfig."""

    model: ModelConfig
    cameras: tuple[str, ...]  # Octo's observation tokenizer names, in Octo's order
    text_tokens: int


def _spec(value: Any, where: str, expected: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, Mapping) or "name" not in value or "kwargs" not in value:
        raise OctoLayoutError(
            f"{where}: expected a module spec (module/name/kwargs), got {value!r}"
        )
    if value["name"] not in expected:
        raise OctoLayoutError(
            f"{where}: module {value.get('module')}.{value['name']} is not supported "
            f"(supported: {', '.join(expected)})"
        )
    if value.get("args"):
        raise OctoLayoutError(f"{where}: positional args {value['args']!r} are not supported")
    return dict(value["kwargs"])


def _only_known(kwargs: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> dict:
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise OctoLayoutError(f"{where}: unsupported arguments {unknown}")
    return {**defaults, **kwargs}


def _image_tokenizer(name: str, spec: Any) -> ImageTokenizerConfig:
    where = f"config.json model.observation_tokenizers.{name}"
    kwargs = _spec(spec, where, ("ImageTokenizer",))
    for key, ok in (
        ("use_token_learner", False),
        ("conditioning_type", "none"),
        ("task_film_keys", []),
        ("proper_pad_mask", True),
    ):
        if key in kwargs and kwargs[key] != ok and not (ok == [] and not kwargs[key]):
            raise OctoLayoutError(f"{where}: {key}={kwargs[key]!r} is not supported")
    obs_keys = list(kwargs.get("obs_stack_keys", ["image_.*", "depth_.*"]))
    if len(obs_keys) != 1 or not re.fullmatch(r"image_\w+", obs_keys[0]):
        raise OctoLayoutError(f"{where}: obs_stack_keys must name one camera, got {obs_keys}")
    key = obs_keys[0]
    task_keys = list(kwargs.get("task_stack_keys", []))
    if task_keys not in ([], [key]):
        raise OctoLayoutError(f"{where}: task_stack_keys must be [] or [{key!r}], got {task_keys}")
    encoder = _only_known(
        _spec(kwargs.get("encoder"), f"{where}.encoder", ("SmallStem16",)),
        SMALL_STEM_DEFAULTS,
        f"{where}.encoder",
    )
    fixed = {k: SMALL_STEM_DEFAULTS[k] for k in ("patch_size", "img_norm_type", "use_film")}
    for k, v in fixed.items():
        if encoder[k] != v:
            raise OctoLayoutError(f"{where}.encoder: {k}={encoder[k]!r} is not supported")
    n = len(encoder["features"])
    for k, v in (("kernel_sizes", 3), ("strides", 2), ("padding", 1)):
        if list(encoder[k])[:n] != [v] * n:
            raise OctoLayoutError(f"{where}.encoder: {k}={encoder[k]!r} is not supported")
    if n != 4:
        raise OctoLayoutError(f"{where}.encoder: SmallStem16 needs 4 stride-2 convs, got {n}")
    return ImageTokenizerConfig(
        camera=key[len("image_") :],
        encoder="small_stem16",
        num_features=int(encoder["num_features"]),
        goal_fusion=bool(task_keys),
        patch_size=16,
        stem_widths=tuple(int(f) for f in encoder["features"]),
    )


def _transformer_preset(model: Mapping[str, Any]) -> str:
    kwargs = model.get("transformer_kwargs", {})
    size = (
        int(model["token_embedding_size"]),
        int(kwargs["num_layers"]),
        int(kwargs["num_attention_heads"]),
        int(kwargs["mlp_dim"]),
    )
    for name, preset in TRANSFORMER_PRESETS.items():
        if (preset.width, preset.num_layers, preset.num_heads, preset.mlp_dim) == size:
            return name
    known = {
        n: (p.width, p.num_layers, p.num_heads, p.mlp_dim) for n, p in TRANSFORMER_PRESETS.items()
    }
    raise OctoLayoutError(
        f"config.json: a transformer of (width, layers, heads, mlp) = {size} matches no preset "
        f"({known})"
    )


def octo_layout(octo_config: Mapping[str, Any], t5_dir: str, window: int) -> OctoLayout:
    """The `ModelConfig` computing what the Octo-1.5 ``config.json`` describes.

    `t5_dir`: a local Hugging Face T5 directory (config.json, spiece.model) standing in for the
    hub name Octo saved; `window`: the example batch's.
    """
    if "model" not in octo_config:
        raise OctoLayoutError("config.json has no 'model' section: not an Octo checkpoint")
    model = octo_config["model"]
    if not model.get("repeat_task_tokens", False) or not model.get("use_correct_attention", False):
        raise OctoLayoutError(
            "config.json: repeat_task_tokens / use_correct_attention are not both true: an "
            "Octo-1.0 checkpoint (its attention layout predates Octo-1.5's); only Octo-1.5 "
            "checkpoints (octo-small-1.5, octo-base-1.5) are imported (docs/octo.md)"
        )
    cameras = tuple(model.get("observation_tokenizers", {}))
    tokenizers = tuple(_image_tokenizer(n, model["observation_tokenizers"][n]) for n in cameras)
    for name, tok in zip(cameras, tokenizers, strict=True):
        if name != tok.camera:
            raise OctoLayoutError(
                f"config.json: observation tokenizer {name!r} reads image_{tok.camera}; "
                "octo_like names a camera's group by its image key"
            )
    task_tokenizers = dict(model.get("task_tokenizers", {}))
    if set(task_tokenizers) != {"language"}:
        raise OctoLayoutError(
            f"config.json: task tokenizers {sorted(task_tokenizers)}: only 'language' is supported"
        )
    language = _spec(
        task_tokenizers["language"], "task_tokenizers.language", ("LanguageTokenizer",)
    )
    if language.get("finetune_encoder", False):
        raise OctoLayoutError("task_tokenizers.language: finetune_encoder=True is not supported")
    heads = dict(model.get("heads", {}))
    if set(heads) != {"action"} or dict(model.get("readouts", {})) != {"action": 1}:
        raise OctoLayoutError(
            f"config.json: heads {sorted(heads)} / readouts {model.get('readouts')}: one "
            "action head with one readout token is supported"
        )
    head = _only_known(
        {
            k: v
            for k, v in _spec(heads["action"], "heads.action", ("DiffusionActionHead",)).items()
            if k not in ("readout_key", "action_horizon", "action_dim")
        },
        DIFFUSION_DEFAULTS,
        "heads.action",
    )
    head_kwargs = _spec(heads["action"], "heads.action", ("DiffusionActionHead",))
    if head_kwargs.get("readout_key", "readout_action") != "readout_action":
        raise OctoLayoutError(f"heads.action: readout_key {head_kwargs['readout_key']!r}")
    if head["use_map"] or head["loss_type"] != "mse" or not head["use_layer_norm"]:
        raise OctoLayoutError(
            "heads.action: use_map / loss_type / use_layer_norm other than Octo-1.5's "
            f"(False, 'mse', True) are not supported: {head}"
        )
    transformer_kwargs = model.get("transformer_kwargs", {})
    if transformer_kwargs.get("add_position_embedding", False):
        raise OctoLayoutError("transformer_kwargs.add_position_embedding=True is not supported")
    config = ModelConfig(
        transformer=_transformer_preset(model),
        image_tokenizers=tokenizers,
        proprio=None,
        language=LanguageConfig(encoder="t5", checkpoint_dir=t5_dir, max_length=16, frozen=True),
        window=window,
        max_horizon=int(model.get("max_horizon", 10)),
        action_horizon=int(head_kwargs.get("action_horizon", 1)),
        action_dim=int(head_kwargs.get("action_dim", 7)),
        head=HeadConfig(
            "diffusion",
            {
                "diffusion_steps": int(head["diffusion_steps"]),
                "hidden_dim": int(head["hidden_dim"]),
                "num_blocks": int(head["num_blocks"]),
                "dropout_rate": float(head["dropout_rate"]),
                "time_dim": int(head["time_dim"]),
                "max_action": float(head["max_action"]),
                **OCTO_DIFFUSION_BEHAVIOURS,
            },
        ),
        dtype="float32",
        frame_resize="lanczos3",  # Octo's evaluation: antialiased Lanczos-3, then for the
        frame_crop_area=0.9,  # primary camera the centred mean of its training crops
        **OCTO_MODEL_BEHAVIOURS,
    )
    return OctoLayout(model=config, cameras=cameras, text_tokens=16)
