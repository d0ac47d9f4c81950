"""No bad frame ends a run unless asked (issue 13): each defect is made by a raw TFRecord or
features.json edit of the real Bridge shard (`bridge_edits.py`), then read by the training
pipeline. Without `skip_bad_episodes` the error is a `DataError` naming dataset, episode and
step (never a raw InvalidArgumentError from inside tf.data); with it, the episode is dropped and
counted. A valid 1-step episode (empty after Bridge's relabelling) is always dropped and counted.
"""

from __future__ import annotations

import pytest

from octo_like.data import builder_dir
from octo_like.data.config import DataConfig, DatasetSource
from octo_like.data.oxe.action_families import StandardizationError
from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.data.pipeline import make_pipeline
from octo_like.data.prepare import standardized_trajectories
from octo_like.data.validation import (
    EMPTY_EPISODE,
    DataError,
    SkippedEpisodes,
    data_errors,
    tf_error_text,
)
from tests.data import bridge_edits as edits

EPISODE = "episode bridge_dataset-train.tfrecord-00000-of-00001__3"

CASES = {
    # name: (edit, features.json edit, error message, skip reason)
    "image_size_mismatch": (
        edits.resize_camera, None,
        f"{EPISODE}: image 'image_0' at step 0 is 32x32, features.json says 64x64",
        "image 'image_0' at step 0 is 32x32, features.json says 64x64 (it would be stretched)",
    ),
    "all_nan_raw_action": (
        edits.nan_action, None,
        f"{EPISODE}: NaN/Inf in raw 'action' at step 2",
        "NaN/Inf in raw 'action' at step 2",
    ),
    "nan_in_state": (
        edits.nan_state, None,
        f"{EPISODE}: NaN/Inf in raw 'observation/state' at step 2",
        "NaN/Inf in raw 'observation/state' at step 2",
    ),
    "missing_action_key": (  # was a raw ConcatOp error naming nothing
        edits.missing_action, None,
        f"{EPISODE}: step field 'observation/image_0' has 10 steps, 'action' 0",
        "step field 'observation/image_0' has 10 steps, 'action' 0 (a key missing from the "
        "episode's records?)",
    ),
}  # fmt: skip
CORRUPT_MESSAGE = f"{EPISODE}, step 2: image 'image_0' does not decode (jpeg::Uncompress failed"
CORRUPT_REASON = "an image does not decode (corrupt image bytes)"


def pipeline(directory, tmp_path, skip: bool):
    source = DatasetSource("bridge_dataset", str(directory))
    config = DataConfig(
        datasets=(source,), batch_size=8, shuffle_buffer=100, skip_bad_episodes=skip,
        statistics_cache_dir=str(tmp_path / "stats"),
    )  # fmt: skip
    return make_pipeline(config)


def read(pipe, batches: int = 40) -> int:
    count = 0
    for _ in pipe:
        count += 1
        if count == batches:
            break
    return count


def trajectories(directory, skip: bool):
    """Every standardized trajectory of the train split (the raw checks run before these)."""
    builder = builder_dir.open_builder(str(directory))
    skipped = SkippedEpisodes()
    dataset = standardized_trajectories(
        builder, get_dataset_spec("bridge_dataset"), "train", ("primary",),
        skip_bad_episodes=skip, skipped=skipped,
    )  # fmt: skip
    with data_errors():
        count = sum(1 for _ in dataset.dataset)
    return count, skipped


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_episode_is_named_or_skipped_and_counted(case, bridge_dir, tmp_path):
    edit, features_edit, message, reason = CASES[case]
    directory = edits.edited_bridge(bridge_dir, tmp_path / "data", edit, features_edit)
    with pytest.raises(DataError) as error:
        trajectories(directory, skip=False)
    assert f"dataset 'bridge_dataset', {message}" in str(error.value)
    count, skipped = trajectories(directory, skip=True)
    assert count == 24  # the other episodes go on
    assert skipped.counts == {("bridge_dataset", reason): 1}


def test_a_corrupt_jpeg_fails_the_training_pipeline_by_name_or_is_skipped(bridge_dir, tmp_path):
    """A valid header and a corrupt body: the strict path meets the image in a batch (frame
    stage) and `Pipeline` names it; with skip_bad_episodes the raw stage's test decode drops
    the episode."""
    directory = edits.edited_bridge(bridge_dir, tmp_path / "data", edits.corrupt_jpeg_body)
    with pytest.raises(DataError) as error:
        read(pipeline(directory, tmp_path / "strict", skip=False))
    assert f"dataset 'bridge_dataset', {CORRUPT_MESSAGE}" in str(error.value)
    assert "skip_bad_episodes=True" in str(error.value)
    skipping = pipeline(directory, tmp_path / "skip", skip=True)
    assert read(skipping) == 40
    assert set(skipping.skipped.counts) == {("bridge_dataset", CORRUPT_REASON)}


def test_one_step_episodes_are_skipped_and_counted_not_fatal(bridge_dir, tmp_path, caplog):
    directory = edits.edited_bridge(bridge_dir, tmp_path / "data", edits.one_step)
    pipe = pipeline(directory, tmp_path, skip=False)
    caplog.set_level("WARNING")
    assert read(pipe) == 40
    assert pipe.skipped.counts[("bridge_dataset", EMPTY_EPISODE)] >= 1
    logged = [r.getMessage() for r in caplog.records]
    assert any(EPISODE.split()[1] in m and EMPTY_EPISODE in m for m in logged), logged


def test_six_dim_bridge_actions_fail_when_the_pipeline_is_built(bridge_dir, tmp_path):
    directory = edits.edited_bridge(
        bridge_dir, tmp_path / "data", edits.six_dim_actions_everywhere,
        edits.six_dim_action_feature,
    )  # fmt: skip
    for skip in (False, True):
        with pytest.raises(StandardizationError, match=r"'action' has shape \(None, 6\).*>= 7"):
            pipeline(directory, tmp_path / str(skip), skip=skip)


def test_a_corrupt_jpeg_header_is_named_or_skipped(bridge_dir, tmp_path):
    """The header size check cannot read it either: strict mode names it, skipping drops it."""
    directory = edits.edited_bridge(bridge_dir, tmp_path / "data", edits.corrupt_jpeg_header)
    with pytest.raises(DataError, match=rf"{EPISODE}, step 2: image 'image_0' does not decode"):
        read(pipeline(directory, tmp_path / "strict", skip=False))
    count, skipped = trajectories(directory, skip=True)
    assert count == 24 and skipped.counts == {("bridge_dataset", CORRUPT_REASON): 1}


def test_tensorflow_decorations_are_stripped_from_messages():
    message = (
        "jpeg::Uncompress failed. Invalid JPEG data or crop window. {{node DecodeJpeg}} "
        "[Op:IteratorGetNext]\n\t [[{{node ParallelMapDatasetV2}}]]\nmore detail"
    )
    assert tf_error_text(message) == "jpeg::Uncompress failed. Invalid JPEG data or crop window."
    assert tf_error_text("x" * 500) == "x" * 300
