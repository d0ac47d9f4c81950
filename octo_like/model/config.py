"""The model's configuration: typed, frozen, JSON round-trippable (it is saved in checkpoints).

Names (transformer presets, head kinds, encoder kinds) are strings looked up in immutable
registries, so a checkpoint never depends on Python import paths.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from octo_like.model.attention import ATTENTION_IMPLEMENTATIONS
from octo_like.model.tokenizers.stems import PATCH_SIZES
from octo_like.model.transformer import REMAT_POLICIES, TRANSFORMER_PRESETS, remat_policy_name

IMAGE_ENCODERS = ("small_stem16", "patch16")
# Compute dtypes; "auto" is bfloat16 on accelerators and float32 on CPU, decided where the
# network is built (`resolve_dtype`), so one checkpoint runs at the native precision of each.
DTYPES = ("float32", "bfloat16", "auto")

LANGUAGE_ENCODERS = ("t5", "small", "none")
GOAL_PADDING = ("grey", "pixels")
STEM_STANDARDIZATIONS = ("rsqrt_variance", "std_plus_eps")
PROPRIO_MODES = ("linear", "per_dim", "per_dim_value")  # model/tokenizers/lowdim.py


def _check_choice(what: str, value: str, choices) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, list(choices), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown {what} {value!r} (choices: {', '.join(choices)}){hint}")


@dataclasses.dataclass(frozen=True)
class ImageTokenizerConfig:
    """One camera's tokenizer. `goal_fusion` stacks the goal image on the channels (early
    fusion); `film` conditions the stem on the language embedding; one token per
    `patch_size`-pixel square (16, Octo's; 8 gives a 64 px image an 8x8 grid), then `keypoints`
    spatial-softmax keypoint tokens (small_stem16 only; 0: none)."""

    camera: str
    encoder: str = "small_stem16"
    num_features: int = 512
    goal_fusion: bool = False
    film: bool = False
    patch_size: int = 16
    keypoints: int = 0
    # small_stem16's stride-2 conv widths; None: (32, 96, 192, 384) cut to the patch side.
    stem_widths: tuple[int, ...] | None = None

    def __post_init__(self):
        _check_choice("image encoder", self.encoder, IMAGE_ENCODERS)
        if self.stem_widths is not None:
            object.__setattr__(self, "stem_widths", tuple(int(w) for w in self.stem_widths))
            if self.encoder != "small_stem16" or not self.stem_widths:
                raise ValueError(
                    f"image tokenizer {self.camera!r}: stem_widths set a small_stem16's conv "
                    f"widths, got {self.stem_widths} for encoder {self.encoder!r}"
                )
        if not isinstance(self.keypoints, int) or self.keypoints < 0:
            raise ValueError(
                f"image tokenizer {self.camera!r}: keypoints must be an int >= 0, "
                f"got {self.keypoints!r}"
            )
        if self.keypoints and self.encoder != "small_stem16":
            raise ValueError(
                f"image tokenizer {self.camera!r}: keypoints need the small_stem16 encoder, "
                f"not {self.encoder!r}"
            )
        if self.patch_size not in PATCH_SIZES:
            raise ValueError(
                f"image tokenizer {self.camera!r}: patch_size must be one of {PATCH_SIZES}, "
                f"got {self.patch_size}"
            )


@dataclasses.dataclass(frozen=True)
class ProprioTokenizerConfig:
    mode: str = "linear"
    num_features: int = 128

    def __post_init__(self):
        _check_choice("proprio mode", self.mode, PROPRIO_MODES)


@dataclasses.dataclass(frozen=True)
class LanguageConfig:
    """`t5` loads a Hugging Face-format T5 directory (`checkpoint_dir`), frozen by default;
    `small` trains a small encoder over the sentencepiece vocabulary in `checkpoint_dir`
    (``spiece.model``); `none` conditions on goal images only."""

    encoder: str = "t5"
    checkpoint_dir: str | None = None
    max_length: int = 16
    frozen: bool = True
    small_width: int = 128
    small_depth: int = 2
    small_heads: int = 4

    def __post_init__(self):
        _check_choice("language encoder", self.encoder, LANGUAGE_ENCODERS)
        if self.encoder != "none" and not self.checkpoint_dir:
            raise ValueError(
                f"language encoder {self.encoder!r} needs checkpoint_dir "
                "(--config.model.language.checkpoint_dir=DIR: a directory with spiece.model, "
                "and for t5 also config.json and model.safetensors)"
            )


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """An action head by registry name with its keyword arguments (e.g. diffusion_steps)."""

    kind: str = "diffusion"
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    readout_tokens: int = 1

    def __post_init__(self):
        from octo_like.model.heads import ACTION_HEADS  # the heads import no config

        _check_choice("action head kind", self.kind, ACTION_HEADS)


LORA_TARGETS = ("query", "key", "value", "out", "fc1", "fc2")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on the transformer's dense layers (see `octo_like.model.lora`).

    Each targeted ``Dense(x) = x W + b`` becomes ``x W + b + (alpha / rank) * x A B`` with A
    float32[d_in, rank] and B float32[rank, d_out] initialized to zero, so an adapted model starts
    equal to its base. `targets` names the layers: attention ``query``/``key``/``value``/``out``
    and MLP ``fc1``/``fc2``.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"lora.rank must be an int >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha!r}")
        if not self.targets:
            raise ValueError("lora.targets is empty: name at least one of " + str(LORA_TARGETS))
        for target in self.targets:
            _check_choice("lora target", target, LORA_TARGETS)
        object.__setattr__(self, "targets", tuple(self.targets))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network's shapes (with the input spec of an example batch)."""

    transformer: str = "small"
    image_tokenizers: tuple[ImageTokenizerConfig, ...] = (
        ImageTokenizerConfig("primary"),
        ImageTokenizerConfig("wrist"),
    )
    proprio: ProprioTokenizerConfig | None = None
    language: LanguageConfig = LanguageConfig(encoder="none")
    goal_image_cameras: tuple[str, ...] = ()
    window: int = 2
    # Timestep positional embeddings hold this many steps and are sliced to `window`, so a
    # model fine-tuned with another window keeps them (Octo: 10). Configs saved before this key
    # existed load with max_horizon = window (their embeddings' size).
    max_horizon: int = 10
    action_horizon: int = 4
    action_dim: int = 7
    head: HeadConfig = HeadConfig()
    # Compute dtype of stems, tokenizers, transformer and head (parameters stay float32).
    dtype: str = "float32"
    # Memory/compile options (see octo_like/model/transformer.py); none changes the parameters.
    remat: str = "none"
    scan_layers: bool = False
    attention: str = "auto"
    # Low-rank adapters on the transformer (fine-tuning); None: plain dense layers.
    lora: LoraConfig | None = None
    # Octo-1.5's behaviours (docs/octo.md): the scale presets (tiny/small/base) and imported
    # Octo checkpoints set the Octo value; the defaults are octo_like's own choices, kept for
    # the CPU presets and the checkpoints trained with them.
    # Octo-1.5: task tokens repeated in every timestep as group obs_task_<name> (never masked
    # by timestep padding), so observations attend to them as to another camera.
    repeat_task_tokens: bool = False
    # octo_like: readouts of padded timesteps are padding (a padded first step of an episode
    # cannot feed the next readout); Octo: readouts are always real.
    mask_padded_readouts: bool = True
    # A goal whose pad_mask_dict entry is False: "grey" = 0.0 after normalizing, whatever its
    # pixels (octo_like: independent of what a client sends); "pixels" = its pixels as given
    # (Octo: create_tasks fills uint8 zeros, i.e. -1.0).
    goal_padding: str = "grey"
    # octo_like: the instruction's padding positions are masked keys; Octo: only the
    # instruction's pad_mask_dict entry masks the language group (T5 outputs at padding
    # positions are attended).
    language_token_mask: bool = True
    # The stem convolutions' weight standardization: "rsqrt_variance" (w - mean) *
    # rsqrt(var + 1e-5) (octo_like, smooth as the variance goes to 0) or "std_plus_eps"
    # (w - mean) / (std + 1e-5) (Octo).
    stem_standardization: str = "rsqrt_variance"
    # How Policy and the server resize frames of another size: "linear" (antialiased, the
    # training pipeline's) or "lanczos3" (antialiased, Octo's examples and data pipeline).
    frame_resize: str = "linear"
    # With frame_resize "lanczos3" (Octo's evaluation), the primary camera is centre-cropped to
    # this fraction of its area and resized back: the mean of Octo's random training crops (0.9).
    frame_crop_area: float | None = None

    def __post_init__(self):
        cameras = [t.camera for t in self.image_tokenizers]
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"a camera has two image tokenizers: {cameras}")
        if not cameras and self.proprio is None:
            raise ValueError("the model has no observation tokenizer (no camera, no proprio)")
        _check_choice("transformer size", self.transformer, TRANSFORMER_PRESETS)
        _check_choice("dtype", self.dtype, DTYPES)
        if isinstance(self.remat, bool):  # configs saved before remat policies existed
            object.__setattr__(self, "remat", remat_policy_name(self.remat))
        _check_choice("remat policy", self.remat, REMAT_POLICIES)
        _check_choice("attention implementation", self.attention, ATTENTION_IMPLEMENTATIONS)
        _check_choice("goal padding", self.goal_padding, GOAL_PADDING)
        _check_choice("stem standardization", self.stem_standardization, STEM_STANDARDIZATIONS)
        _check_choice("frame resize", self.frame_resize, ("linear", "lanczos3"))
        if self.frame_crop_area is not None and not (
            0 < self.frame_crop_area <= 1 and self.frame_resize == "lanczos3"
        ):
            raise ValueError(
                f"frame_crop_area ({self.frame_crop_area}) must be in (0, 1] and goes with "
                f"frame_resize 'lanczos3' (Octo's evaluation frames), got {self.frame_resize!r}"
            )
        film = [t.camera for t in self.image_tokenizers if t.film]
        if film and self.language.encoder == "none":
            raise ValueError(f"FiLM on cameras {film} needs a language encoder (language=none)")
        for name in ("window", "action_horizon", "action_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1")
        if self.max_horizon < self.window:
            raise ValueError(
                f"ModelConfig.max_horizon ({self.max_horizon}) must be >= window ({self.window}): "
                "the timestep positional embeddings are sliced to the window"
            )

    def compute_dtype(self, platform: str) -> str:
        """The concrete compute dtype on `platform` ('cpu', 'gpu', 'tpu')."""
        return resolve_dtype(self.dtype, platform)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(t.camera for t in self.image_tokenizers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are errors (a typo must not pass silently)."""
        if "max_horizon" not in data:  # saved before max_horizon: embeddings sized by window
            data = {**data, "max_horizon": data.get("window", cls.window)}
        return _build(cls, data, "model")


# The ModelConfig values that compute what Octo-1.5 computes (the scale presets and imported
# Octo checkpoints), and the diffusion head's: time input as the raw step index, Octo's sampler.
OCTO_MODEL_BEHAVIOURS: Mapping[str, Any] = MappingProxyType(
    {
        "repeat_task_tokens": True,
        "mask_padded_readouts": False,
        "goal_padding": "pixels",
        "language_token_mask": False,
        "stem_standardization": "std_plus_eps",
    }
)
OCTO_DIFFUSION_BEHAVIOURS: Mapping[str, Any] = MappingProxyType(
    {"time_input": "step", "sampler": "octo"}
)


def resolve_dtype(dtype: str, platform: str) -> str:
    """'auto' -> bfloat16 on accelerators, float32 on CPU; concrete names pass through."""
    if dtype != "auto":
        return dtype
    return "float32" if platform == "cpu" else "bfloat16"


_NESTED = {
    "image_tokenizers": ImageTokenizerConfig,
    "proprio": ProprioTokenizerConfig,
    "language": LanguageConfig,
    "head": HeadConfig,
    "lora": LoraConfig,
}


def _build(cls, data: Mapping[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        hints = {u: difflib.get_close_matches(u, list(fields), n=1) for u in unknown}
        described = ", ".join(
            f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in hints.items()
        )
        raise ValueError(f"{where}: unknown key(s) {described}")
    kwargs = {}
    for key, value in data.items():
        nested = _NESTED.get(key) if cls is ModelConfig else None
        if nested is not None and value is not None:
            if key == "image_tokenizers":
                value = tuple(_build(nested, v, f"{where}.{key}[{i}]") for i, v in enumerate(value))
            else:
                value = _build(nested, value, f"{where}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        elif key == "kwargs":
            value = dict(value)
        kwargs[key] = value
    return cls(**kwargs)
