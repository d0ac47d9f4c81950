"""Frame transforms: decode, resize, augmentation and camera dropout, eagerly and in tf.data."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from octo_like.data import image_ops
from octo_like.data.frame_transforms import (
    AugmentConfig,
    CameraTransform,
    augment_images,
    decode_images,
    dropout_cameras,
    transform_frame,
)

# Every op off; tests switch on the one they check.
NO_AUG = AugmentConfig(
    random_resized_crop_scale=None, brightness=None, contrast=None, saturation=None, hue=None
)


def only(**fields) -> AugmentConfig:
    return AugmentConfig(**{**NO_AUG.__dict__, **fields})


def png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(np.asarray(image, np.uint8)).numpy()


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8[h, w, 3]: smooth colourful gradients plus noise (mid-range, no clipping)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([60 + 120 * y, 60 + 120 * x, 180 - 100 * (x + y) / 2], -1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def seed(a: int, b: int = 0) -> tf.Tensor:
    return tf.constant([a, b], tf.int64)


def make_frame(history, goal, *, camera="primary", extra=None, masks=None, goal_mask=True):
    """A stage-3 frame with one camera (plus `extra`: {camera: (history, goal)})."""
    cams = {camera: (history, goal), **(extra or {})}
    obs_masks = masks or {}
    return {
        "observation": {
            **{f"image_{c}": tf.constant(h) for c, (h, _) in cams.items()},
            "proprio": tf.zeros([len(history), 3]),
            "pad_mask_dict": {
                f"image_{c}": tf.constant(obs_masks.get(c, [True] * len(h)))
                for c, (h, _) in cams.items()
            },
        },
        "task": {
            **{f"image_{c}": tf.constant(g) for c, (_, g) in cams.items()},
            "language_instruction": tf.constant(b"do it"),
            "pad_mask_dict": {f"image_{c}": tf.constant(goal_mask) for c in cams},
        },
        "dataset_name": tf.constant(b"toy_ds"),
        "episode_index": tf.constant(7, tf.int64),
    }


def in_dataset(fn, *args):
    """Runs fn(*args) inside tf.data.Dataset.map (graph mode) and returns numpy leaves."""
    ds = tf.data.Dataset.from_tensors(args).map(lambda *a: fn(*a))
    return next(iter(ds.as_numpy_iterator()))


def assert_trees_equal(a, b):
    tf.nest.map_structure(lambda x, y: np.testing.assert_array_equal(np.asarray(x), y), a, b)


@pytest.fixture(scope="module")
def bridge_jpegs(bridge_dir) -> list[bytes]:
    """Ten real 64x64 Bridge JPEGs (image_0 of the first training episode), still encoded."""
    builder = tfds.builder_from_directory(bridge_dir)
    decoders = {"steps": {"observation": {"image_0": tfds.decode.SkipDecoding()}}}
    episode = next(iter(builder.as_dataset("train[:1]", decoders=decoders)))
    steps = next(iter(episode["steps"].batch(100)))
    return list(steps["observation"]["image_0"].numpy())


@pytest.fixture(scope="module")
def tex64() -> bytes:
    return png(textured(64, 64))


# --------------------------------------------------------------------------- decoding


def test_decode_shapes_missing_images_and_resizing(tex64):
    grey = png(np.full((20, 30, 1), 90))  # one channel, other size
    images = decode_images(tf.constant([[tex64, b""], [grey, tex64]]), (32, 48))
    assert images.shape == (2, 2, 32, 48, 3) and images.dtype == tf.uint8
    assert np.all(images[0, 1].numpy() == 0)  # b"" -> zeros
    np.testing.assert_array_equal(images[1, 0].numpy(), 90)  # grey -> RGB, constant stays
    assert images[0, 0].numpy().std() > 10  # real content
    # Same size: decoded exactly (PNG is lossless); scalar input keeps no batch axis.
    same = decode_images(tf.constant(tex64), (64, 64))
    np.testing.assert_array_equal(same.numpy(), textured(64, 64))
    assert np.all(decode_images(tf.constant([b"", b""]), (8, 8)).numpy() == 0)
    # Graph mode (tf.data) gives the same, including the all-missing branch.
    encoded = tf.constant([[tex64, b""], [grey, tex64]])
    graph = in_dataset(lambda e: decode_images(e, (32, 48)), encoded)
    np.testing.assert_array_equal(graph, images.numpy())
    assert np.all(in_dataset(lambda e: decode_images(e, (8, 8)), tf.constant([b""])) == 0)


def test_decode_shrinks_with_antialiasing():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes alias to black/white without a low-pass filter
    out = decode_images(tf.constant(png(stripes)), (20, 20)).numpy().astype(float)
    assert np.all(np.abs(out - 127.5) < 20)  # bilinear without antialiasing is off by ~100


def test_decode_garbage_names_context_eagerly_and_in_dataset(tex64):
    frame = make_frame([tex64, b"\xff\x00\x89 not an image"], tex64)  # not even UTF-8
    cameras = {"primary": CameraTransform((32, 32))}
    with pytest.raises(tf.errors.InvalidArgumentError, match="toy_ds.*episode 7.*primary"):
        transform_frame(frame, None, cameras, train=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="toy_ds.*episode 7.*primary"):
        in_dataset(lambda f: transform_frame(f, None, cameras, train=False), frame)
    with pytest.raises(tf.errors.InvalidArgumentError, match="camera 3 of ep 9"):
        decode_images(tf.constant([b"\x00\x01garbage"]), (8, 8), context="camera 3 of ep 9")


def test_unknown_batch_size_path_matches_static(tex64):
    other = png(textured(32, 32, seed=1))  # another size: resized to the first entry's
    encoded = tf.constant([tex64, b"", other])
    params = image_ops.sample_augment_params(seed(3), AugmentConfig())
    static = image_ops.decode_resize(encoded, (48, 48), params)
    dynamic_fn = tf.function(
        lambda e: image_ops.decode_resize(e, (48, 48), params),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    np.testing.assert_array_equal(dynamic_fn(encoded).numpy(), static.numpy())
    assert np.all(static[1].numpy() == 0) and static[2].numpy().std() > 5


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("dtype", [tf.uint8, tf.float32])
def test_augment_same_seed_same_output_and_eager_equals_dataset(dtype):
    images = tf.constant(np.stack([textured(48, 40, s) for s in range(3)]))
    if dtype == tf.float32:
        images = tf.cast(images, tf.float32) / 255.0
    config = AugmentConfig()
    eager = augment_images(images, seed(1), config)
    assert eager.shape == images.shape and eager.dtype == dtype
    np.testing.assert_array_equal(eager.numpy(), augment_images(images, seed(1), config).numpy())
    graph = in_dataset(lambda x, s: augment_images(x, s, config), images, seed(1))
    np.testing.assert_allclose(graph, eager.numpy(), atol=1e-6 if dtype == tf.float32 else 0)
    other = augment_images(images, seed(2), config).numpy()
    assert np.abs(other.astype(float) - eager.numpy()).mean() > 1e-3
    assert not np.array_equal(eager.numpy(), images.numpy())


def test_augment_shares_parameters_across_the_batch():
    image = textured(40, 40)
    out = augment_images(tf.constant(np.stack([image] * 4)), seed(5), AugmentConfig()).numpy()
    for i in range(1, 4):
        np.testing.assert_array_equal(out[i], out[0])


def test_sampled_parameters_stay_in_range_and_each_op_has_its_own_seed():
    config = AugmentConfig(random_resized_crop_scale=(0.3, 0.6), random_resized_crop_ratio=(0.5, 2))
    draws = [image_ops.sample_augment_params(seed(i), config) for i in range(64)]
    boxes = np.stack([d.box.numpy() for d in draws])
    assert np.all(boxes >= 0) and np.all(boxes <= 1 + 1e-6)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert np.all(area <= 0.6 + 1e-5) and np.all(area >= 0.3 * 0.5 - 1e-5)  # clipped at 1
    brightness = np.array([d.brightness.numpy() for d in draws])
    hue = np.array([d.hue.numpy() for d in draws])
    assert np.all(np.abs(brightness) <= 0.1) and brightness.min() < 0 < brightness.max()
    assert np.all(np.abs(hue) <= 0.05) and hue.min() < 0 < hue.max()
    # Independent draws: brightness and hue are not the same uniform rescaled.
    assert abs(np.corrcoef(brightness, hue)[0, 1]) < 0.5


def test_brightness_moves_the_mean_by_the_drawn_delta():
    image = tf.constant(np.full((1, 16, 16, 3), 128, np.uint8))
    config = only(brightness=0.2)
    for i in range(4):
        delta = image_ops.sample_augment_params(seed(i), config).brightness.numpy()
        out = augment_images(image, seed(i), config).numpy().astype(float)
        assert out.mean() - 128 == pytest.approx(255 * delta, abs=0.6)


def test_contrast_scales_deviation_from_the_mean():
    image = tf.constant(textured(32, 32)[None])
    config = only(contrast=(0.5, 0.5))
    out = augment_images(image, seed(0), config).numpy().astype(float)
    source = image.numpy().astype(float)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0.5 * source.std(axis=(1, 2)), rtol=0.03)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), source.mean(axis=(1, 2)), atol=1)


@pytest.mark.parametrize("source, target", [(16, 48), (96, 24)])  # colour before / after resize
def test_saturation_zero_gives_grey(source, target):
    frame = make_frame([png(textured(source, source))] * 2, png(textured(source, source, 1)))
    cameras = {"primary": CameraTransform((target, target), only(saturation=(0.0, 0.0)))}
    out = transform_frame(frame, seed(0), cameras, train=True)
    for images in (out["observation"]["image_primary"], out["task"]["image_primary"]):
        rgb = images.numpy().astype(int)
        assert rgb.shape[-3:] == (target, target, 3)
        assert np.abs(rgb - rgb[..., :1]).max() <= 1  # R == G == B
        assert rgb.std() > 5  # still an image, not a flat fill


def test_hue_rotates_red_towards_green_or_blue_by_sign():
    red = tf.constant(np.tile(np.array([200, 30, 30], np.uint8), (1, 8, 8, 1)))
    config = only(hue=0.1)
    signs = set()
    for i in range(6):
        delta = image_ops.sample_augment_params(seed(i), config).hue.numpy()
        _, green, blue = augment_images(red, seed(i), config).numpy()[0, 0, 0].astype(int)
        assert (green > blue) == (delta > 0), (delta, green, blue)
        signs.add(delta > 0)
    assert signs == {True, False}


def test_crop_at_quarter_area_keeps_at_most_one_of_each_pair_of_sides():
    image = np.full((64, 64, 3), 128, np.uint8)
    sides = {"top": (255, 0, 0), "bottom": (0, 255, 0), "left": (0, 0, 255), "right": (255, 255, 0)}
    image[:4], image[-4:] = sides["top"], sides["bottom"]
    image[:, :4], image[:, -4:] = sides["left"], sides["right"]
    config = only(random_resized_crop_scale=(0.25, 0.25), random_resized_crop_ratio=(1.0, 1.0))
    border_in = np.mean(np.any(image != 128, -1))
    for i in range(8):
        out = augment_images(tf.constant(image[None]), seed(i), config).numpy()[0]
        seen = {n: np.any(np.all(np.abs(out.astype(int) - c) < 40, -1)) for n, c in sides.items()}
        assert not (seen["top"] and seen["bottom"]) and not (seen["left"] and seen["right"])
        assert np.mean(np.any(np.abs(out.astype(int) - 128) > 40, -1)) < border_in
    full = only(random_resized_crop_scale=(1.0, 1.0), random_resized_crop_ratio=(1.0, 1.0))
    same = augment_images(tf.constant(image[None]), seed(0), full).numpy()[0]
    np.testing.assert_array_equal(same, image)  # full box at the same size is the identity


# --------------------------------------------------------------------------- transform_frame


def test_transform_frame_bridge_shapes_and_untouched_keys(bridge_jpegs):
    frame = make_frame(bridge_jpegs[:2], bridge_jpegs[5], extra={"wrist": (bridge_jpegs[2:4], b"")})
    cameras = {
        "primary": CameraTransform((256, 256), AugmentConfig()),
        "wrist": CameraTransform((128, 96), None),
    }
    for train in (True, False):
        out = transform_frame(frame, seed(0), cameras, train=train)
        obs, task = out["observation"], out["task"]
        assert obs["image_primary"].shape == (2, 256, 256, 3)
        assert obs["image_wrist"].shape == (2, 128, 96, 3)
        assert task["image_primary"].shape == (256, 256, 3)
        assert task["image_wrist"].shape == (128, 96, 3)
        assert all(obs[k].dtype == tf.uint8 for k in ("image_primary", "image_wrist"))
        assert np.all(task["image_wrist"].numpy() == 0)  # b"" goal -> zeros
        assert obs["proprio"] is frame["observation"]["proprio"]
        assert obs["pad_mask_dict"] is frame["observation"]["pad_mask_dict"]
        assert task["language_instruction"] is frame["task"]["language_instruction"]
        assert out["dataset_name"] is frame["dataset_name"]
    # The input frame is not mutated.
    assert frame["observation"]["image_primary"].dtype == tf.string


def test_transform_frame_eager_equals_dataset_and_seed_behaviour(bridge_jpegs):
    frame = make_frame(bridge_jpegs[:2], bridge_jpegs[9])
    cameras = {"primary": CameraTransform((64, 80), AugmentConfig())}
    run = lambda f, s: transform_frame(f, s, cameras, train=True)
    eager = run(frame, seed(4))
    assert_trees_equal(eager, in_dataset(run, frame, seed(4)))
    assert_trees_equal(eager, run(frame, seed(4)))
    other = run(frame, seed(5))["observation"]["image_primary"].numpy()
    assert not np.array_equal(other, eager["observation"]["image_primary"].numpy())


def test_history_and_goal_share_one_augmentation_per_frame(tex64):
    frame = make_frame([tex64, tex64], tex64)
    cameras = {"primary": CameraTransform((48, 48), AugmentConfig(brightness=0.3, hue=0.2))}
    first = transform_frame(frame, seed(1), cameras, train=True)
    history = first["observation"]["image_primary"].numpy()
    np.testing.assert_array_equal(history[0], history[1])
    np.testing.assert_array_equal(history[0], first["task"]["image_primary"].numpy())
    second = transform_frame(frame, seed(2), cameras, train=True)
    assert not np.array_equal(second["observation"]["image_primary"].numpy()[0], history[0])


def test_cameras_draw_independent_augmentations(tex64):
    frame = make_frame([tex64], tex64, extra={"wrist": ([tex64], tex64)})
    transform = CameraTransform((32, 32), AugmentConfig())
    out = transform_frame(frame, seed(0), {"primary": transform, "wrist": transform}, train=True)
    primary, wrist = out["observation"]["image_primary"], out["observation"]["image_wrist"]
    assert not np.array_equal(primary.numpy(), wrist.numpy())


def test_no_augmentation_when_not_training(bridge_jpegs):
    frame = make_frame(bridge_jpegs[:2], bridge_jpegs[3])
    augmented = {"primary": CameraTransform((100, 100), AugmentConfig())}
    plain = decode_images(tf.constant(bridge_jpegs[:2]), (100, 100)).numpy()
    out = transform_frame(frame, None, augmented, train=False)
    np.testing.assert_array_equal(out["observation"]["image_primary"].numpy(), plain)
    # Training with an augment-free camera is the plain resize too.
    out = transform_frame(frame, seed(0), {"primary": CameraTransform((100, 100))}, train=True)
    np.testing.assert_array_equal(out["observation"]["image_primary"].numpy(), plain)


def test_bad_configuration_is_reported(tex64):
    frame = make_frame([tex64], tex64)
    with pytest.raises(ValueError, match="missing config: \\['primary'\\]"):
        transform_frame(frame, None, {"wrist": CameraTransform((8, 8))}, train=False)
    with pytest.raises(ValueError, match="needs a seed"):
        transform_frame(frame, None, {"primary": CameraTransform((8, 8), NO_AUG)}, train=True)
    decoded = transform_frame(frame, None, {"primary": CameraTransform((8, 8))}, train=False)
    with pytest.raises(ValueError, match="already decoded"):
        transform_frame(decoded, None, {"primary": CameraTransform((8, 8))}, train=False)
    with pytest.raises(ValueError, match="size"):
        CameraTransform((0, 8))
    with pytest.raises(ValueError, match="brightness"):
        AugmentConfig(brightness=1.5)
    with pytest.raises(ValueError, match="random_resized_crop_scale"):
        AugmentConfig(random_resized_crop_scale=(0.9, 0.5))


# --------------------------------------------------------------------------- dropout


def three_camera_frame(decoded: bool, present=("primary", "secondary", "wrist"), window=2):
    """Frame with three cameras; cameras not in `present` have all pad masks False."""
    cams = ("primary", "secondary", "wrist")
    if decoded:
        images = {
            c: (np.full((window, 4, 4, 3), 9, np.uint8), np.full((4, 4, 3), 9, np.uint8))
            for c in cams
        }
    else:
        images = {c: ([b"img"] * window, b"goal") for c in cams}
    frame = make_frame(
        *images["primary"],
        extra={c: images[c] for c in cams[1:]},
        masks={c: [c in present] * window for c in cams},
    )
    for c in cams:
        frame["task"]["pad_mask_dict"][f"image_{c}"] = tf.constant(c in present)
    return frame


def batched_dropout(frame, seeds: int, probability: float, always_keep=None):
    """Dropout over `seeds` seeds in one tf.data pass; returns stacked numpy frames."""
    ds = tf.data.Dataset.range(seeds).map(
        lambda i: dropout_cameras(frame, tf.stack([i, 11]), probability, always_keep)
    )
    return next(iter(ds.batch(seeds).as_numpy_iterator()))


def test_dropout_zeroes_images_and_masks_consistently_eager_and_in_dataset():
    frame = three_camera_frame(decoded=True, window=3)
    eager = dropout_cameras(frame, seed(3), 0.5)
    assert_trees_equal(eager, in_dataset(lambda f, s: dropout_cameras(f, s, 0.5), frame, seed(3)))
    out = batched_dropout(frame, 64, 0.5)
    for c in ("primary", "secondary", "wrist"):
        key = f"image_{c}"
        obs_mask = out["observation"]["pad_mask_dict"][key]  # [S, W]
        goal_mask = out["task"]["pad_mask_dict"][key]  # [S]
        kept = obs_mask[:, 0]
        assert np.all(obs_mask == kept[:, None]) and np.all(goal_mask == kept)
        assert np.all(out["observation"][key][~kept] == 0) and np.all(out["task"][key][~kept] == 0)
        assert np.all(out["observation"][key][kept] == 9) and np.all(out["task"][key][kept] == 9)
        assert 0 < kept.sum() < 64
    assert out["observation"]["proprio"].shape == (64, 3, 3)


def test_dropout_of_encoded_images_empties_them():
    out = dropout_cameras(three_camera_frame(decoded=False), seed(0), 1.0, always_keep="wrist")
    assert out["observation"]["image_primary"].numpy().tolist() == [b"", b""]
    assert out["task"]["image_secondary"].numpy() == b""
    assert out["observation"]["image_wrist"].numpy().tolist() == [b"img", b"img"]


def test_dropout_never_drops_every_present_camera():
    frame = three_camera_frame(decoded=True, present=("primary", "wrist"))
    out = batched_dropout(frame, 300, 0.9)
    masks = out["observation"]["pad_mask_dict"]
    kept = np.stack([masks[f"image_{c}"][:, 0] for c in ("primary", "secondary", "wrist")], -1)
    assert np.all(kept.sum(-1) >= 1)
    assert not kept[:, 1].any()  # the absent camera never comes back
    # probability 1: exactly one present camera survives, each of them sometimes.
    out = batched_dropout(frame, 100, 1.0)
    masks = out["observation"]["pad_mask_dict"]
    primary, wrist = masks["image_primary"][:, 0], masks["image_wrist"][:, 0]
    assert np.all(primary ^ wrist) and 20 < primary.sum() < 80


def test_dropout_respects_always_keep():
    out = batched_dropout(three_camera_frame(decoded=True), 100, 0.8, always_keep="secondary")
    masks = out["observation"]["pad_mask_dict"]
    assert np.all(masks["image_secondary"])
    assert masks["image_primary"][:, 0].mean() < 0.4  # the others are still dropped
    # An absent always_keep camera falls back to keeping a random present one.
    frame = three_camera_frame(decoded=True, present=("primary", "wrist"))
    masks = batched_dropout(frame, 50, 1.0, always_keep="secondary")["observation"]["pad_mask_dict"]
    assert np.all(masks["image_primary"][:, 0] ^ masks["image_wrist"][:, 0])


def test_dropout_rate_matches_probability():
    p, seeds, cameras = 0.3, 2000, 3
    masks = batched_dropout(three_camera_frame(decoded=True), seeds, p)["observation"]
    rate = np.mean([~masks["pad_mask_dict"][f"image_{c}"][:, 0] for c in ("primary", "wrist")])
    expected = p - p**cameras / cameras  # the all-dropped rescue keeps one of the three
    assert rate == pytest.approx(expected, abs=0.025)


def test_dropout_bad_arguments():
    frame = three_camera_frame(decoded=True)
    with pytest.raises(ValueError, match="probability"):
        dropout_cameras(frame, seed(0), 1.5)
    with pytest.raises(ValueError, match="always_keep 'side'"):
        dropout_cameras(frame, seed(0), 0.5, always_keep="side")
    assert dropout_cameras(frame, seed(0), 0.0) is frame
