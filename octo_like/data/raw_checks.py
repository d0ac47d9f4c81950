"""Checks of raw RLDS episodes before standardization, so a problem is named where it is.

A standardizer can hide or move a defect: Bridge rebuilds its arm actions from the states, so a
step of all-NaN raw actions passed and a NaN state was reported as "NaN/Inf in action". Here,
on the episode as stored (schema stage 1):

- NaN/Inf, or a value beyond ±`VALUE_LIMIT` (its square overflows float32), in the raw
  ``action`` leaves or the raw proprio key, with the key and the step (and the dimension);
- an image whose stored size differs from features.json, which would otherwise be stretched
  silently: read from the header for JPEG, PNG, BMP and GIF, by decoding for the other formats
  `tf.io.decode_image` reads (WebP, JPEG XL; `_header_size`);
- with ``skip_bad_episodes``, images that do not decode (a valid header and a corrupt body):
  every image is test-decoded at 1/8 scale and an episode whose decode fails is dropped and
  named in the log (`DecodeTracker`). Without it, the batch that meets the image fails, and
  `locate_undecodable_image` names the dataset, episode, step and camera.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from octo_like.data.oxe.action_families import get_path
from octo_like.data.oxe.spec import DatasetSpec
from octo_like.data.validation import first_problem, tf_error_text, value_problem

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG"
_BMP = b"BM"
_GIF = b"GIF"


def expected_image_shapes(builder, spec: DatasetSpec, cameras: Sequence[str]) -> dict:
    """{raw observation key: (h, w)} from features.json for the cameras the run reads."""
    steps = builder.info.features["steps"]
    step = steps.feature if hasattr(steps, "feature") else steps
    observation = step["observation"]
    shapes = {}
    for camera in cameras:
        key = spec.image_keys.get(camera)
        if key is None:
            continue
        try:
            feature = observation
            for part in key.split("/"):
                feature = feature[part]
        except (KeyError, TypeError):  # a missing key is reported by the standardization
            continue
        shape = getattr(feature, "shape", None)
        if shape is not None and len(shape) == 3 and None not in shape[:2]:
            shapes[key] = (int(shape[0]), int(shape[1]))
    return shapes


def raw_problem(traj: Mapping[str, Any], spec: DatasetSpec, image_shapes: dict) -> tf.Tensor:
    """string scalar: b"" for a raw episode with no defect, else the first defect found."""
    checks = [_unequal_steps(traj)]
    action = traj.get("action")
    if action is not None:
        for path, leaf in _float_leaves(action, "action"):
            checks.append(value_problem(leaf, f"raw {path!r}"))
    if spec.proprio_key is not None:
        observation = traj.get("observation", {})
        try:
            proprio = get_path(observation, spec.proprio_key, spec.name)
        except Exception:  # noqa: BLE001  (derived by the standardizer: checked after it)
            proprio = None
        if isinstance(proprio, tf.Tensor) and proprio.dtype.is_floating:
            checks.append(value_problem(proprio, f"raw 'observation/{spec.proprio_key}'"))
    for key, (height, width) in image_shapes.items():
        images = get_path(traj["observation"], key, spec.name)
        checks.append(_wrong_size(images, key, height, width))
    return first_problem(checks)  # the first defect wins


def _unequal_steps(traj: Mapping[str, Any]) -> tf.Tensor:
    """A step field with another number of steps than the action (a key missing from some
    records decodes as 0 steps and failed later as a raw ConcatOp error)."""
    leaves = [(p, v) for p, v in _leaves(traj.get("action"), "action")]
    leaves += [(p, v) for p, v in _leaves(traj.get("observation"), "observation")]
    if len(leaves) < 2:
        return tf.constant("")
    steps = tf.shape(leaves[0][1])[0]
    problem = tf.constant("")
    for path, leaf in reversed(leaves[1:]):
        count = tf.shape(leaf)[0]
        problem = tf.where(
            tf.equal(count, steps),
            problem,
            tf.strings.join([
                f"step field '{path}' has ", tf.strings.as_string(count), " steps, ",
                f"'{leaves[0][0]}' ", tf.strings.as_string(steps),
                " (a key missing from the episode's records?)",
            ]),
        )  # fmt: skip
    return problem


def _leaves(tree, prefix: str):
    if isinstance(tree, Mapping):
        for key, value in sorted(tree.items()):  # the same field named in every run
            yield from _leaves(value, f"{prefix}/{key}")
    elif isinstance(tree, tf.Tensor) and tree.shape.rank:
        yield prefix, tree


def _float_leaves(tree, prefix: str):
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _float_leaves(value, f"{prefix}/{key}")
    elif isinstance(tree, tf.Tensor) and tree.dtype.is_floating:
        yield prefix, tree


def _header_size(encoded: tf.Tensor) -> tf.Tensor:
    """int32[2] (h, w) of an encoded image of any format `tf.io.decode_image` reads: from the
    header for JPEG, PNG, BMP and GIF (no decode), by decoding for WebP and JPEG XL; (-1, -1)
    for empty bytes (a missing image), a header too short to hold the size, or bytes of no
    known format (the decode after shuffling names those)."""

    def big_endian(offset):
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(encoded, offset, 4), tf.uint8), tf.int32)
        return raw[0] * 2**24 + raw[1] * 2**16 + raw[2] * 2**8 + raw[3]

    def little_endian(offset, size):
        raw = tf.io.decode_raw(tf.strings.substr(encoded, offset, size), tf.uint8)
        raw = tf.cast(raw, tf.int32)
        value = tf.reduce_sum(raw * tf.bitwise.left_shift(1, 8 * tf.range(size)))
        return value

    def png():  # IHDR: width, height (big-endian) at bytes 16..24
        return tf.stack([big_endian(20), big_endian(16)])

    def bmp():  # BITMAPINFOHEADER: width, height (little-endian int32; height < 0: top-down)
        return tf.stack([tf.abs(little_endian(22, 4)), little_endian(18, 4)])

    def gif():  # logical screen: width, height (little-endian uint16) at bytes 6..10
        return tf.stack([little_endian(8, 2), little_endian(6, 2)])

    def decoded():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.shape(image, out_type=tf.int32)[:2]

    def other():  # unknown bytes are left to the decode after shuffling, which names them
        webp = tf.equal(head, b"RIFF") & tf.equal(tf.strings.substr(encoded, 8, 4), b"WEBP")
        jpeg_xl = tf.equal(tf.strings.substr(head, 0, 2), b"\xff\x0a") | tf.equal(
            tf.strings.substr(encoded, 4, 8), b"JXL \r\n\x87\n"
        )
        return tf.cond(webp | jpeg_xl, decoded, lambda: tf.constant([-1, -1], tf.int32))

    length = tf.strings.length(encoded)
    head = tf.strings.substr(encoded, 0, 4)
    return tf.case(
        [
            (tf.equal(length, 0), lambda: tf.constant([-1, -1], tf.int32)),
            (tf.equal(tf.strings.substr(head, 0, 3), _JPEG),
             lambda: tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int32)),
            (tf.equal(head, _PNG), lambda: _if_long(length, 24, png)),
            (tf.equal(tf.strings.substr(head, 0, 2), _BMP), lambda: _if_long(length, 26, bmp)),
            (tf.equal(tf.strings.substr(head, 0, 3), _GIF), lambda: _if_long(length, 10, gif)),
        ],
        default=other,
    )  # fmt: skip


def _if_long(length: tf.Tensor, needed: int, size) -> tf.Tensor:
    return tf.cond(length >= needed, size, lambda: tf.constant([-1, -1], tf.int32))


def _wrong_size(images: tf.Tensor, key: str, height: int, width: int) -> tf.Tensor:
    return _first_wrong_size(images, tf.constant(key), tf.constant([height, width], tf.int32))


# Traced once per process and shared by every camera of every dataset (the header parsing's
# conditionals, traced per camera, were most of building a many-dataset pipeline).
@tf.function(
    input_signature=[
        tf.TensorSpec([None], tf.string),
        tf.TensorSpec([], tf.string),
        tf.TensorSpec([2], tf.int32),
    ],
    autograph=False,
)
def _first_wrong_size(images: tf.Tensor, key: tf.Tensor, expected: tf.Tensor) -> tf.Tensor:
    sizes = tf.map_fn(_header_size, images, fn_output_signature=tf.TensorSpec([2], tf.int32))
    known = sizes[:, 0] >= 0
    bad = known & tf.reduce_any(tf.not_equal(sizes, expected), axis=-1)

    def describe():  # only where a step is bad: argmax fails on a zero-length episode
        step = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
        found = tf.strings.as_string(tf.gather(sizes, step))
        said = tf.strings.as_string(expected)
        return tf.strings.join([
            "image '", key, "' at step ", tf.strings.as_string(step), " is ", found[0], "x",
            found[1], ", features.json says ", said[0], "x", said[1], " (it would be stretched)",
        ])  # fmt: skip

    return tf.cond(tf.reduce_any(bad), describe, lambda: tf.constant(""))


def decode_check(traj: Mapping[str, Any], keys: Sequence[str], spec: DatasetSpec) -> tf.Tensor:
    """Decodes every image of `keys` at low cost (JPEG at 1/8 scale); fails on corrupt bytes."""
    outputs = []
    for key in keys:
        images = get_path(traj["observation"], key, spec.name)

        def decode(encoded):
            def jpeg():
                return tf.shape(tf.io.decode_jpeg(encoded, ratio=8, channels=3))[:2]

            def other():
                image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
                return tf.shape(image)[:2]

            return tf.case(
                [
                    (tf.equal(tf.strings.length(encoded), 0), lambda: tf.zeros([2], tf.int32)),
                    (tf.equal(tf.strings.substr(encoded, 0, 3), _JPEG), jpeg),
                ],
                default=other,
            )

        signature = tf.TensorSpec([2], tf.int32)
        outputs.append(tf.reduce_sum(tf.map_fn(decode, images, fn_output_signature=signature)))
    return tf.add_n(outputs) if outputs else tf.constant(0)


class DecodeTracker:
    """Names the episodes a decode check dropped: `entered` runs before the check, `passed`
    after `ignore_errors` (in order, so an entered episode missing before a passed one failed)."""

    def __init__(self, dataset: str, skipped):
        self._dataset = dataset
        self._skipped = skipped
        self._lock = threading.Lock()
        self._entered: collections.deque[bytes] = collections.deque()

    def entered(self, episode: bytes) -> bool:
        with self._lock:
            self._entered.append(bytes(episode))
        return True

    def passed(self, episode: bytes) -> bool:
        episode = bytes(episode)
        dropped = []
        with self._lock:
            while self._entered and self._entered[0] != episode:
                dropped.append(self._entered.popleft())
            if self._entered:
                self._entered.popleft()
        for bad in dropped:
            self._skipped.record(
                self._dataset.encode(), bad, b"an image does not decode (corrupt image bytes)"
            )
        return True


def locate_undecodable_image(sources, cameras: Sequence[str], time_limit_s: float = 300.0):
    """(dataset, episode id, step, raw key, error) of the first image that does not decode in
    `sources` [(builder, spec, split)], or None (nothing found within `time_limit_s`)."""
    from octo_like.data import rlds

    deadline = time.monotonic() + time_limit_s
    for builder, spec, split in sources:
        keys = [spec.image_keys[c] for c in cameras if spec.image_keys.get(c)]
        episodes = rlds.read_episodes(  # a damaged shard is reported by the reading itself
            builder, split, shuffle_files=False, num_parallel_reads=1, skip_damaged_shards=True
        )
        for traj in episodes:
            for key in keys:
                try:
                    images = get_path(traj["observation"], key, spec.name).numpy()
                except Exception:  # noqa: BLE001
                    continue
                for step, encoded in enumerate(images):
                    if not encoded:
                        continue
                    try:
                        tf.io.decode_image(encoded, channels=3, expand_animations=False)
                    except tf.errors.OpError as error:
                        episode = traj["tfds_id"].numpy().decode()
                        return spec.name, episode, step, key, tf_error_text(error.message)
            if time.monotonic() > deadline:
                return None
    return None


def describe_undecodable(sources, cameras: Sequence[str]) -> str | None:
    """`locate_undecodable_image` as an error message, or None."""
    found = locate_undecodable_image(sources, cameras)
    if found is None:
        return None
    dataset, episode, step, key, error = found
    return (
        f"dataset {dataset!r}, episode {episode}, step {step}: image {key!r} does not decode "
        f"({error})"
    )
