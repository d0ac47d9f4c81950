"""Write a few fake robot episodes (.npz and .hdf5) to try the conversion flow end to end.

    python data/make_example_episodes.py --out /tmp/my_robot_episodes [--num_npz 4 --num_hdf5 4]
    python data/make_example_episodes.py --out /tmp/my_robot_episodes --with_bad_episode

The episodes follow the layout of `octo_like.data.episode_files` and match the feature
declarations of the builder template `data/my_robot/my_robot_dataset_builder.py`: cameras
``front`` (64x64) and ``wrist`` (32x32), a 6-dim ``state`` and a 7-dim ``action`` (xyz and
roll-pitch-yaw deltas plus a gripper command, 1 = open). ``--with_bad_episode`` adds one file
with a NaN action, to see how the converter reports it (and skips it with ``--skip_bad``).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

INSTRUCTIONS = ("pick up the red block", "open the drawer", "push the cup to the left")
CAMERAS = {"front": (64, 64), "wrist": (32, 32)}
STATE_DIM, ACTION_DIM = 6, 7


def fake_frames(rng: np.random.Generator, length: int, height: int, width: int) -> np.ndarray:
    """uint8[T, h, w, 3]: a plain background with a square that drifts over time."""
    frames = np.empty((length, height, width, 3), np.uint8)
    frames[:] = rng.integers(40, 200, size=3)
    side = max(2, min(height, width) // 4)
    position = rng.integers(0, [height - side, width - side])
    colour = rng.integers(0, 256, size=3)
    for t in range(length):
        y, x = np.clip(position + t, 0, [height - side, width - side])
        frames[t, y : y + side, x : x + side] = colour
    return frames


def fake_episode(rng: np.random.Generator, length: int, instruction: str) -> dict:
    """Keyword arguments of `write_episode_file` for one smooth, plausible episode."""
    deltas = np.cumsum(rng.normal(0, 0.01, size=(length, ACTION_DIM - 1)), axis=0)
    gripper = (np.arange(length) < length // 2).astype(np.float32)  # open, then closed
    state = np.cumsum(rng.normal(0, 0.05, size=(length, STATE_DIM)), axis=0)
    return {
        "images": {name: fake_frames(rng, length, *size) for name, size in CAMERAS.items()},
        "state": state.astype(np.float32),
        "action": np.concatenate([deltas, gripper[:, None]], axis=1).astype(np.float32),
        "instruction": instruction,
    }


def write_example_episodes(
    out_dir: str,
    *,
    num_npz: int = 4,
    num_hdf5: int = 4,
    length: tuple[int, int] = (20, 40),
    with_bad_episode: bool = False,
    seed: int = 0,
) -> list[str]:
    """Writes ``episode_<i>.npz`` / ``.hdf5`` files under `out_dir`; returns their paths."""
    from octo_like.data.episode_files import write_episode_file

    rng = np.random.default_rng(seed)
    paths = []
    suffixes = [".npz"] * num_npz + [".hdf5"] * num_hdf5
    for index, suffix in enumerate(suffixes):
        episode = fake_episode(
            rng, int(rng.integers(length[0], length[1] + 1)), INSTRUCTIONS[index % 3]
        )
        if with_bad_episode and index == len(suffixes) - 1:
            episode["action"][len(episode["action"]) // 2, 0] = np.nan
        path = os.path.join(out_dir, f"episode_{index:04d}{suffix}")
        paths.append(write_episode_file(path, **episode))
    return paths


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the episode files into")
    parser.add_argument("--num_npz", type=int, default=4)
    parser.add_argument("--num_hdf5", type=int, default=4)
    parser.add_argument("--min_length", type=int, default=20)
    parser.add_argument("--max_length", type=int, default=40)
    parser.add_argument("--with_bad_episode", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_example_episodes(
        args.out,
        num_npz=args.num_npz,
        num_hdf5=args.num_hdf5,
        length=(args.min_length, args.max_length),
        with_bad_episode=args.with_bad_episode,
        seed=args.seed,
    )
    print(f"wrote {len(paths)} episode files to {os.path.abspath(args.out)}")
    return paths


if __name__ == "__main__":
    main()
