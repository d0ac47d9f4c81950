"""Camera keys may be nested paths (``cameras/front/rgb``), as language keys can (issue 13)."""

from __future__ import annotations

import numpy as np

from octo_like.data import synthetic
from octo_like.data.config import DataConfig, DatasetSource
from octo_like.data.oxe.spec import ActionEncoding, DatasetSpec
from octo_like.data.pipeline import make_pipeline

NESTED = synthetic.RldsSchema(
    observation={
        "cameras": {"front": {"rgb": synthetic.image(24, 24)}, "hand": synthetic.image(16, 16)},
        "joints": synthetic.tensor((3,)),
    },
    step={"action": synthetic.tensor((4,)), "language_instruction": synthetic.text()},
)


def test_nested_camera_keys_are_read(tmp_path):
    synthetic.write_rlds_dataset(
        str(tmp_path), "nested_cams", NESTED, episodes={"train": 3}, episode_length=6
    )
    spec = DatasetSpec(
        name="nested_cams",
        image_keys={"primary": "cameras/front/rgb", "wrist": "cameras/hand"},
        proprio_key="joints",
        action_encoding=ActionEncoding.CUSTOM,
        standardize="identity",
        action_normalization_mask=(True, True, True, False),
    )
    config = DataConfig(
        datasets=(DatasetSource("nested_cams", str(tmp_path)),),
        extra_specs={"nested_cams": spec},
        batch_size=4,
        shuffle_buffer=10,
        statistics_cache_dir=str(tmp_path / "stats"),
    )
    batch = next(iter(make_pipeline(config)))
    images = batch["observation"]["image_primary"]
    assert images.shape[0] == 4 and images.dtype == np.uint8 and images.std() > 0
