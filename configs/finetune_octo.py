"""Octo's examples/02_finetune_new_observation_action.py as a config: from a converted Octo-1.5
checkpoint (docs/octo.md), a new 14-dim L1 head over 50-step chunks, a new proprio tokenizer,
T5 frozen (the imported config's `language.frozen`), and a camera the pretrained model never
saw beside its primary one:

    python finetune.py --config configs/finetune_octo.py --workdir runs/my_robot \
        --config.pretrained_path=runs/octo_small \
        --config.dataset.name=my_robot --config.dataset.location=/data/my_robot/1.0.0

`data.extra_specs` maps the dataset's keys (here `top`, `side`, `joints`: edit them for yours,
data/README.md); the argument is configs/finetune.py's MODE,TASK.
"""

from __future__ import annotations

import ml_collections

from configs import finetune

ACTION_DIM, CHUNK = 14, 50


def get_config(arg: str = "full,language") -> ml_collections.ConfigDict:
    c = finetune.get_config(arg)
    c.data.extra_specs = {
        "my_robot": dict(
            image_keys=dict(primary="top", side="side"),
            proprio_key="joints",
            action_encoding="custom",
            action_normalization_mask=(True,) * ACTION_DIM,
            standardize="identity",
        )
    }
    c.data.frame.cameras = dict(
        primary=dict(size=None, augment=dict()), side=dict(size=(128, 128), augment=None)
    )
    c.data.trajectory.action_horizon = CHUNK  # 50-step chunks...
    c.model.head.kind = "l1"  # ...from a new L1 head...
    c.model.action_dim = ACTION_DIM  # ...of 14-dim actions
    c.model.proprio = dict(mode="linear", num_features=128)  # a new proprio tokenizer
    c.model.image_tokenizers = (dict(camera="primary"), dict(camera="side"))  # a new camera
    return c
