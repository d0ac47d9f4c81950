"""Inputs a fine-tuning dataset holds that the model would not read, and the lines that add them.

A fine-tuning model keeps the pretrained model's cameras and proprio by default, so a user's
dataset with another camera (a wrist view) or a proprio key would train without them and say
nothing. `unread_inputs` compares what each dataset's spec maps (``image_keys``,
``proprio_key``) with what the model reads (its image tokenizers, goal-image cameras, proprio
tokenizer); `UnreadInputs.message` names every such key with the command-line overrides that
add it, which a run logs as a WARNING before anything is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.training.config import TrainConfig

# What the suggested proprio tokenizer is: ProprioTokenizerConfig's defaults (one token).
SUGGESTED_PROPRIO = {"mode": "linear"}


@dataclasses.dataclass(frozen=True)
class UnreadInputs:
    """One dataset's mapped inputs the model does not read.

    cameras: ``{canonical camera: dataset image key}`` of the unread cameras.
    proprio_key: the dataset's proprio key when the model has no proprio tokenizer, else None.
    read_cameras: the cameras the model's image tokenizers read, in order.
    """

    dataset: str
    cameras: Mapping[str, str]
    proprio_key: str | None
    read_cameras: tuple[str, ...]

    def overrides(self) -> list[str]:
        """The finetune.py command-line flags that make the model read every unread input, as
        a user types them (``shlex.split`` gives the argv entries)."""
        lines = []
        if self.cameras:
            cameras = [*self.read_cameras, *self.cameras]
            entries = ", ".join(f"{{'camera': {camera!r}}}" for camera in cameras)
            entries += "," if len(cameras) == 1 else ""  # a one-element tuple
            lines.append(f'--config.model.image_tokenizers="({entries})"')
        if self.proprio_key is not None:
            lines.append(f'--config.model.proprio="{SUGGESTED_PROPRIO!r}"')
        return lines

    def message(self) -> str:
        """The warning: every unread key by name, then the lines that add them."""
        read = ", ".join(self.read_cameras) or "none"
        lines = [
            f"fine-tuning dataset {self.dataset!r} maps inputs the model will not read; "
            "the run trains without them:"
        ]
        lines += [
            f"  camera {camera!r} (dataset key {key!r}): the model reads cameras {read}"
            for camera, key in self.cameras.items()
        ]
        if self.proprio_key is not None:
            lines.append(f"  proprio {self.proprio_key!r}: the model has no proprio tokenizer")
        lines.append("to train on them, add to the finetune.py command line:")
        lines += [f"  {line}" for line in self.overrides()]
        lines.append(
            "(a new camera gets the pretrained first camera's image size unless "
            "data.frame.cameras sets it; docs/finetuning.md)"
        )
        return "\n".join(lines)


def unread_inputs(config: TrainConfig) -> list[UnreadInputs]:
    """Per dataset of `config` with any: the cameras and proprio its spec maps that the model
    will not read. A dataset whose spec cannot be found is left to the pipeline, which names
    it when it opens the data."""
    model = config.model
    read = set(model.cameras) | set(model.goal_image_cameras)
    found = []
    for source in config.data.datasets:
        try:
            spec = get_dataset_spec(source.name, config.data.extra_specs)
        except (KeyError, ValueError, TypeError):
            continue
        cameras = {
            camera: key
            for camera, key in spec.image_keys.items()
            if key is not None and camera not in read
        }
        proprio = spec.proprio_key if model.proprio is None else None
        if cameras or proprio is not None:
            found.append(UnreadInputs(source.name, cameras, proprio, tuple(model.cameras)))
    return found
