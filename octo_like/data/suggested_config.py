"""The fine-tuning config file the episode converter suggests (``--config_out``).

It registers the converted dataset by its suggested spec (read from the spec JSON, so an edit
there reaches the run), names the dataset and its location, sets the action dim, and makes the
model read every camera and the proprio the spec maps: the stock fine-tuning config keeps the
pretrained model's inputs, which would leave a wrist camera or the robot's state unused.
data/README.md shows the file it writes for the example episodes (a test compares the two).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

_TEMPLATE = '''\
# {config_path}
"""Fine-tunes on {name}; written by data/convert_raw_episodes.py (edit it freely):

    python finetune.py --config {config_path}:full,language \\
        --workdir runs/ft_{name} --config.pretrained_path=runs/laptop/checkpoints
"""

import json
import os

from configs import finetune


def get_config(arg: str = "full,language"):
    c = finetune.get_config(arg)
    with open({spec_path}) as file:
        c.data.extra_specs = {{{name_literal}: json.load(file)}}
    c.dataset.name = {name_literal}
    c.dataset.location = {dataset_dir}
    c.model.action_dim = {action_dim}  # the dataset's action dim
{inputs}    return c
'''


def _path_literal(path: str) -> str:
    """`path` as Python source: under the home directory as ``os.path.expanduser("~/...")``, so
    the file works for whoever runs it from their own home; else the absolute path."""
    path = os.path.abspath(os.path.expanduser(path))
    home = os.path.expanduser("~")
    if path.startswith(home + os.sep):
        relative = os.path.relpath(path, home)
        return f"os.path.expanduser({json.dumps('~/' + relative)})"
    return json.dumps(path)  # a valid Python string literal


def _input_lines(spec: Mapping[str, Any]) -> str:
    """Lines that make the model read every camera and the proprio `spec` maps."""
    cameras = [camera for camera, key in spec["image_keys"].items() if key is not None]
    lines = ["    # Every camera and the proprio the spec maps (by default: the pretrained ones)"]
    if cameras:
        entries = ", ".join(f"dict(camera={json.dumps(camera)})" for camera in cameras)
        entries += "," if len(cameras) == 1 else ""
        lines.append(f"    c.model.image_tokenizers = ({entries})")
    if spec.get("proprio_key"):
        key = json.dumps(spec["proprio_key"])
        lines.append(f'    c.model.proprio = dict(mode="linear")  # a new tokenizer for {key}')
    return "\n".join(lines) + "\n" if len(lines) > 1 else ""


def finetune_config_file(
    spec: Mapping[str, Any], dataset_dir: str, spec_path: str, config_path: str
) -> str:
    """The text of a fine-tuning config file for a converted dataset.

    `spec`: the suggested `DatasetSpec` dict (``suggest_dataset_spec``), whose
    ``action_normalization_mask`` has one entry per action dim; `dataset_dir`: the converted
    ``.../name/version``; `spec_path`: where that spec's JSON is (the file reads it);
    `config_path`: where the file will be, as the finetune.py command names it.
    """
    mask = spec.get("action_normalization_mask")
    if not mask:
        raise ValueError(
            f"spec {spec.get('name')!r} has no action_normalization_mask to take the action "
            "dim from"
        )
    return _TEMPLATE.format(
        config_path=config_path,
        name=spec["name"],
        name_literal=json.dumps(spec["name"]),
        spec_path=_path_literal(spec_path),
        dataset_dir=_path_literal(dataset_dir),
        action_dim=len(mask),
        inputs=_input_lines(spec),
    )
