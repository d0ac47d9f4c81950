"""The fine-tuned model's config and frame cameras, resolved against the pretrained model's
(`finetune_config.parse_finetune_config` calls these once it has read the checkpoint).

The fine-tuning config's ``model`` section is read against the pretrained model's config: a value
left None is the pretrained model's (``transformer``, ``language``, ``goal_image_cameras``,
``dtype``, ``remat``, ``scan_layers``, ``attention``, ``proprio``, ``action_dim``), so the new
model reuses as much as it can by default. Per entry:

- ``image_tokenizers``: None keeps the pretrained cameras; otherwise a tuple of dicts naming a
  ``camera`` each, whose missing / None fields come from the pretrained tokenizer of that camera,
  or for a new camera from the pretrained model's first tokenizer.
- ``proprio``: None inherits, ``"none"`` removes it, a dict adds / replaces it.
  (These two and ``data.frame.cameras`` are Python literals on the command line.)
- ``head``: ``kind`` / ``readout_tokens`` None inherit; when the kind is unchanged, ``kwargs``
  update the pretrained head's kwargs key by key (Octo's ``update_config``: e.g.
  ``{"loss_scale": "action_dim"}`` keeps every other setting), for a new kind they are its
  kwargs (``{}`` when None).
- ``window`` and ``action_horizon`` always come from ``data.trajectory``.

``data.frame.cameras`` None means the cameras the model reads (augmenting ``primary``), and a
camera the model reads that it does not list is added (not augmented): the pipeline loads what
the model reads. A camera whose ``size`` is None gets the image size the pretrained model was
built for, or for a camera it never saw that of its first camera (where a new camera's tokenizer
comes from too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from octo_like.config.typed import ConfigError
from octo_like.model.config import ModelConfig

NO_PROPRIO = "none"
_INHERITED = (
    "transformer",
    "goal_image_cameras",
    "dtype",
    "remat",
    "scan_layers",
    "attention",
    "action_dim",
)


def resolve_model(overrides: Mapping[str, Any], pretrained: ModelConfig) -> dict[str, Any]:
    """The fine-tuning model config as a dict: `pretrained` with the set `overrides` applied
    (see the module docstring for what None means per key)."""
    base = pretrained.to_dict()
    known = set(base) - {"window", "action_horizon", "lora"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"config.model: unknown key(s) {unknown}; valid: {sorted(known)}")
    model = dict(base)
    # The run's own data pipeline prepares its frames (bilinear resize, its own crops): Policy
    # serves the result those, not an imported Octo model's evaluation frames.
    model.update(frame_resize="linear", frame_crop_area=None)
    for key in _INHERITED:
        if overrides.get(key) is not None:
            model[key] = overrides[key]
    language = overrides.get("language")
    if language is not None:
        language = dict(language)
        if language.get("encoder", "t5") != "none" and not language.get("checkpoint_dir"):
            language["checkpoint_dir"] = base["language"]["checkpoint_dir"]
        model["language"] = language
    proprio = overrides.get("proprio")
    if proprio is not None and proprio != NO_PROPRIO and not isinstance(proprio, Mapping):
        raise ConfigError(
            f"config.model.proprio: {proprio!r} is neither {NO_PROPRIO!r} nor a dict; e.g. "
            "--config.model.proprio=\"{'mode': 'linear'}\""
        )
    if proprio == NO_PROPRIO:
        model["proprio"] = None
    elif proprio is not None:
        model["proprio"] = proprio
    tokenizers = overrides.get("image_tokenizers")
    if tokenizers is not None and (
        isinstance(tokenizers, (str, Mapping))
        or not isinstance(tokenizers, Sequence)
        or not all(isinstance(t, Mapping) for t in tokenizers)
    ):
        raise ConfigError(
            f"config.model.image_tokenizers: {tokenizers!r} is not a tuple of dicts; e.g. "
            "--config.model.image_tokenizers=\"({'camera': 'primary'}, {'camera': 'wrist'})\""
        )
    if tokenizers is not None:
        model["image_tokenizers"] = [_tokenizer(t, base["image_tokenizers"]) for t in tokenizers]
    head = overrides.get("head")
    if head is not None:
        model["head"] = _head(head, base["head"])
    return model


def _tokenizer(entry: Mapping[str, Any], pretrained: list[dict]) -> dict[str, Any]:
    entry = dict(entry)
    if not entry.get("camera"):
        raise ConfigError(f"config.model.image_tokenizers: entry {entry} names no camera")
    same = [t for t in pretrained if t["camera"] == entry["camera"]]
    template = same[0] if same else (pretrained[0] if pretrained else {})
    merged = {k: v for k, v in template.items() if k != "camera"}
    merged.update({k: v for k, v in entry.items() if v is not None})
    return merged


def _head(head: Mapping[str, Any], pretrained: dict) -> dict[str, Any]:
    head = dict(head)
    kind = head.get("kind") or pretrained["kind"]
    kwargs = dict(head.get("kwargs") or {})
    if kind == pretrained["kind"]:
        kwargs = {**pretrained["kwargs"], **kwargs}
    readout = head.get("readout_tokens")
    unknown = sorted(set(head) - {"kind", "kwargs", "readout_tokens"})
    if unknown:
        raise ConfigError(f"config.model.head: unknown key(s) {unknown}")
    return {
        "kind": kind,
        "kwargs": dict(kwargs),
        "readout_tokens": pretrained["readout_tokens"] if readout is None else readout,
    }


def read_cameras(model: Mapping[str, Any]) -> list[str]:
    """The cameras a resolved model config reads: its tokenizers', then goal-only ones."""
    cameras = [t["camera"] for t in model["image_tokenizers"]]
    return cameras + [c for c in model.get("goal_image_cameras") or () if c not in cameras]


def frame_with_sizes(
    frame: Mapping[str, Any],
    pretrained: ModelConfig,
    pretrained_input_spec: Mapping[str, Any],
    read: Sequence[str],
) -> dict[str, Any]:
    """Cameras None: the `read` ones (what the model reads), augmenting ``primary`` only; a
    read camera missing from given cameras is added; a size None: the pretrained model's image
    size for that camera (in `pretrained_input_spec`), or for a camera it never saw its first
    camera's."""
    frame = dict(frame)
    observation = pretrained_input_spec.get("observation", {})
    given = frame.get("cameras")
    if given is not None and not isinstance(given, Mapping):
        raise ConfigError(
            f"config.data.frame.cameras: {given!r} is not a dict of camera -> "
            "dict(size=..., augment=...)"
        )
    given = dict(given or {})
    for camera in read:
        given.setdefault(camera, {"size": None, "augment": {} if camera == "primary" else None})
    first = next(iter(pretrained.cameras), None)
    cameras = {}
    for camera, transform in given.items():
        transform = dict(transform)
        if transform.get("size") is None:
            entry = observation.get(f"image_{camera}") or observation.get(f"image_{first}")
            if entry is None:
                raise ConfigError(
                    f"config.data.frame.cameras.{camera}.size is None, but the pretrained model "
                    f"has no camera to take it from: set it, e.g. (128, 128)"
                )
            transform["size"] = list(entry["shape"][-3:-1])
        cameras[camera] = transform
    if cameras:
        frame["cameras"] = cameras
    return frame
