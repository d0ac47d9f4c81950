"""Bad data: copies of the real Bridge shard (../shared, never edited in place) with one defect,
read through the project's RLDS stage strictly (a named DataError expected) and with
skip_bad_episodes (dropped and counted expected)."""

from __future__ import annotations

import math
import pathlib
import re
import shutil

import numpy as np

from tests.drill.common import SHARED_BRIDGE, case, classify_error, expect_error, one_line

TRAIN_SHARD = "bridge_dataset-train.tfrecord-00000-of-00001"
GOOD_COUNT = 25  # trajectories in the unedited train split


def _trajectories(directory, skip: bool):
    from tests.data.test_bad_frames import trajectories

    return trajectories(directory, skip)


def _edited(ctx, edit=None, features_edit=None, file_edit=None):
    from tests.data import bridge_edits

    if edit is None and features_edit is None:
        directory = ctx.tmp / "data" / "bridge_dataset" / "1.0.0"
        shutil.copytree(SHARED_BRIDGE, directory)
    else:
        directory = bridge_edits.edited_bridge(
            str(SHARED_BRIDGE), ctx.tmp / "data", edit or (lambda f: None), features_edit
        )
    if file_edit is not None:
        file_edit(directory)
    return directory


def _strict_and_skipping(case_id: str, names: str, **edits) -> None:
    """Two cases: strict read (named expected), skipping read (skipped and counted expected)."""

    @case(f"{case_id}", "data")
    def strict(ctx):
        directory = _edited(ctx, **edits)
        return expect_error(lambda: _trajectories(directory, False), names, silent_if="read all")

    @case(f"{case_id}-skip", "data", good="skipped")
    def skipping(ctx):
        directory = _edited(ctx, **edits)
        try:
            count, skipped = _trajectories(directory, True)
        except Exception as error:  # noqa: BLE001
            return classify_error(error, names)
        if skipped.counts:
            return "skipped", one_line(f"{count} read, skipped {dict(skipped.counts)}")
        return "silent", f"{count} read, nothing skipped or reported"


def _pipeline(ctx, directory, skip: bool):
    from tests.data.test_bad_frames import pipeline

    return pipeline(directory, ctx.tmp / f"stats-{skip}", skip)


def _read(pipe, batches: int = 40) -> int:
    from tests.data.test_bad_frames import read

    return read(pipe, batches)


def _batches(ctx, directory, skip: bool) -> int:
    return _read(_pipeline(ctx, directory, skip))


def _edit(name):
    from tests.data import bridge_edits

    return getattr(bridge_edits, name)


def _set_action(value, step: int = 2):
    def edit(feature):
        values = list(feature["steps/action"].float_list.value)
        values[step * 7] = value
        del feature["steps/action"].float_list.value[:]
        feature["steps/action"].float_list.value.extend(values)

    return edit


def _set_state(value, step: int = 2):
    """One finite huge value in `observation/state` (Bridge relabels its actions from the
    reached states, so a raw action never reaches the statistics; the state does, as proprio)."""

    def edit(feature):
        values = list(feature["steps/observation/state"].float_list.value)
        values[step * (len(values) // len(feature["steps/is_first"].int64_list.value))] = value
        del feature["steps/observation/state"].float_list.value[:]
        feature["steps/observation/state"].float_list.value.extend(values)

    return edit


def _truncate(name: str, keep: float):
    def edit(directory):
        path = directory / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return edit


def _flip_shard(directory):
    path = directory / TRAIN_SHARD
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _delete(name: str):
    return lambda directory: (directory / name).unlink()


EPISODE = r"dataset 'bridge_dataset'.*episode"
_strict_and_skipping("data-nan-action", EPISODE, edit=_set_action(math.nan))
_strict_and_skipping("data-inf-action", EPISODE, edit=_set_action(math.inf))


def _corrupt_jpeg(case_id: str, edit_name: str) -> None:
    """One image of an episode corrupted by `edit_name`: the strict training pipeline names
    the episode (an undecodable header at once, a corrupt body when a batch meets it)."""

    @case(case_id, "data")
    def run(ctx):
        directory = _edited(ctx, edit=lambda f: _edit(edit_name)(f))
        return expect_error(lambda: _batches(ctx, directory, False), EPISODE, silent_if="read all")


_corrupt_jpeg("data-corrupt-jpeg-header", "corrupt_jpeg_header")


@case("data-corrupt-jpeg-header-skip", "data", good="skipped")
def corrupt_jpeg_header_skip(ctx):
    directory = _edited(ctx, edit=lambda f: _edit("corrupt_jpeg_header")(f))
    count, skipped = _trajectories(directory, True)
    if skipped.counts:
        return "skipped", one_line(f"{count} read, skipped {dict(skipped.counts)}")
    return "silent", f"{count} read, nothing skipped or reported"


_corrupt_jpeg("data-corrupt-jpeg-body", "corrupt_jpeg_body")


@case("data-corrupt-jpeg-body-skip", "data", good="skipped")
def corrupt_jpeg_body_skip(ctx):
    directory = _edited(ctx, edit=lambda f: _edit("corrupt_jpeg_body")(f))
    pipe = _pipeline(ctx, directory, True)
    count = _read(pipe)
    if pipe.skipped.counts:
        return "skipped", one_line(f"{count} batches, skipped {dict(pipe.skipped.counts)}")
    return "silent", f"{count} batches, nothing skipped or reported"


_strict_and_skipping("data-wrong-image-size", EPISODE, edit=lambda f: _edit("resize_camera")(f))
_strict_and_skipping("data-nan-state", EPISODE, edit=lambda f: _edit("nan_state")(f))
_strict_and_skipping("data-truncated-shard", r"bridge_dataset.*tfrecord",
                     file_edit=_truncate(TRAIN_SHARD, 0.6))  # fmt: skip
_strict_and_skipping("data-corrupted-shard", r"bridge_dataset.*tfrecord", file_edit=_flip_shard)


@case("data-missing-key", "data")
def missing_key(ctx):
    def edit(feature):
        del feature["steps/action"]

    directory = _edited(ctx, edit=edit)
    return expect_error(lambda: _batches(ctx, directory, False), r"action", silent_if="read all")


@case("data-truncated-dataset-info", "data")
def truncated_info(ctx):
    directory = _edited(ctx, file_edit=_truncate("dataset_info.json", 0.5))
    return expect_error(lambda: _trajectories(directory, False), r"dataset_info\.json")


@case("data-missing-features-json", "data")
def missing_features(ctx):
    directory = _edited(ctx, file_edit=_delete("features.json"))
    return expect_error(lambda: _trajectories(directory, False), r"features\.json")


@case("data-missing-shard", "data")
def missing_shard(ctx):
    directory = _edited(ctx, file_edit=_delete(TRAIN_SHARD))
    return expect_error(lambda: _trajectories(directory, False), r"tfrecord|shard")


def _outlier_case(case_id: str, value: float) -> None:
    @case(case_id, "data")
    def run(ctx):
        """One finite huge state value (Bridge's proprio): the statistics must warn (or
        refuse), not poison silently."""
        import logging

        from octo_like.data.config import DataConfig, DatasetSource
        from octo_like.data.pipeline import make_pipeline

        records: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())

        logging.getLogger().addHandler(Keep(level=logging.WARNING))
        directory = _edited(ctx, edit=_set_state(value))
        config = DataConfig(
            datasets=(DatasetSource("bridge_dataset", str(directory)),), batch_size=8,
            shuffle_buffer=100, statistics_cache_dir=str(ctx.tmp / "stats"),
        )  # fmt: skip
        try:
            make_pipeline(config)
        except Exception as error:  # noqa: BLE001
            return classify_error(error, r"episode.*(action|outlier|observation/state)")
        warned = [r for r in records if "outlier" in r.lower() or f"{value:g}" in r]
        if warned:
            return "named", one_line(f"warning: {warned[0]}")
        return "silent", f"statistics computed with a {value:g} state value, no warning"


_outlier_case("data-statistics-1e30-state", 1e30)
_outlier_case("data-statistics-3e38-outlier", 3e38)


def _episodes_with_truncated_npz(ctx) -> tuple[pathlib.Path, str]:
    from octo_like.data.raw_episodes import write_episode_file

    folder = ctx.tmp / "episodes"
    rng = np.random.default_rng(0)
    for index in range(3):
        write_episode_file(
            str(folder / f"ep_{index}.npz"),
            images={"front": rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)},
            state=rng.normal(size=(5, 6)).astype(np.float32),
            action=rng.normal(size=(5, 5)).astype(np.float32), instruction="pick",
        )  # fmt: skip
    bad = folder / "ep_1.npz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return folder, str(bad)


@case("data-converter-truncated-npz", "data")
def truncated_npz(ctx):
    from octo_like.data.raw_episodes import convert_episodes

    folder, bad = _episodes_with_truncated_npz(ctx)
    out = str(ctx.tmp / "out")
    convert = lambda: convert_episodes(str(folder), out, "drill", verbose=False)  # noqa: E731
    return expect_error(convert, re.escape(bad), silent_if="converted")


@case("data-converter-truncated-npz-skip", "data", good="skipped")
def truncated_npz_skip(ctx):
    import logging

    from octo_like.data.raw_episodes import convert_episodes

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logging.getLogger().addHandler(Keep(level=logging.WARNING))
    folder, bad = _episodes_with_truncated_npz(ctx)
    out = str(ctx.tmp / "out")
    try:
        convert_episodes(str(folder), out, "drill", skip_bad=True, verbose=False)
    except Exception as error:  # noqa: BLE001
        return classify_error(error, re.escape(bad))
    reported = [r for r in records if bad in r]
    if reported:
        return "skipped", one_line(f"converted the rest; warned: {reported[0]}")
    return "silent", f"converted without {pathlib.Path(bad).name}, no warning naming it"
