"""The contract between pipeline stages: keys, shapes and dtypes at each stage.

It lives at the package root and imports nothing of the project because three layers read it:
the input pipeline (`octo_like/data`) writes batches in this layout, the model's tokenizers
(`octo_like/model`) and inference (`octo_like/inference`) read them.

The data flow, top to bottom (each stage's module, under `octo_like/data/`, states its own input
and output):

1. RLDS episode (`rlds.py`): ``{"steps": Dataset[step], "episode_metadata": {...}}`` read with
   images kept encoded, then batched into one dict per episode with a leading time axis ``T``.

2. Standardized trajectory (`oxe/` standardization + `restructure.py`)::

       observation:
         image_<camera>   string[T]      encoded image bytes; b"" where the camera is missing
         proprio          float32[T, P]  P may be 0 when the dataset has no proprio
         timestep         int32[T]
       task:
         language_instruction  string[T]   b"" when the episode has no instruction
       action             float32[T, A]
       dataset_name       string[T]
       episode_index      int64[T]         position of the episode in this process's stream
       episode_id         string[]         the record's TFDS id (file + position), for errors;
                                           broadcast to [T] when trajectories become frames

   where ``<camera>`` ranges over the canonical camera names configured for the run
   (e.g. ``primary``, ``secondary``, ``wrist``).

3. Windowed trajectory (`traj_transforms.py`), per frame t of a trajectory, window W, horizon H::

       observation:
         image_<camera>        string[T, W]
         proprio               float32[T, W, P]
         timestep              int32[T, W]
         timestep_pad_mask     bool[T, W]          False before the episode start
         pad_mask_dict:        {image_<camera>: bool[T, W], proprio: bool[T, W]}
       task:
         language_instruction  string[T]
         image_<camera>        string[T]           goal images (b"" when not relabeled)
         timestep              int32[T]            the goal timestep
         pad_mask_dict:        {language_instruction: bool[T], image_<camera>: bool[T]}
       action                  float32[T, W, H, A]
       action_pad_mask         bool[T, W, H, A]    False past the episode end (or the goal),
                                                   for padded window steps and padded dims

   then flattened into frames (the leading ``T`` disappears).

4. Frames after `frame_transforms.py`: image strings become ``uint8[W, h, w, 3]`` (observation)
   and ``uint8[h, w, 3]`` (task goals), resized per camera and augmented at train time.

5. Batches (`pipeline.py`): every frame leaf gains a leading batch axis ``b``. This is the layout
   the model consumes::

       observation.image_<camera>          uint8[b, W, h, w, 3]
       observation.proprio                 float32[b, W, P]
       observation.timestep                int32[b, W]
       observation.timestep_pad_mask       bool[b, W]
       observation.proprio_pad_mask        bool[b, W, P]     False for padded proprio dims
       observation.pad_mask_dict.<key>     bool[b, W]
       task.language_instruction           bytes[b]          (object array of bytes)
       task.image_<camera>                 uint8[b, h, w, 3]
       task.pad_mask_dict.<key>            bool[b]
       action                              float32[b, W, H, A]   normalized
       action_pad_mask                     bool[b, W, H, A]
       dataset_name                        bytes[b]
"""

from __future__ import annotations

CANONICAL_CAMERAS = ("primary", "secondary", "wrist")

IMAGE_PREFIX = "image_"
PROPRIO = "proprio"
TIMESTEP = "timestep"
TIMESTEP_PAD_MASK = "timestep_pad_mask"
PROPRIO_PAD_MASK = "proprio_pad_mask"
PAD_MASK_DICT = "pad_mask_dict"
LANGUAGE = "language_instruction"
ACTION = "action"
ACTION_PAD_MASK = "action_pad_mask"
DATASET_NAME = "dataset_name"
EPISODE_INDEX = "episode_index"
EPISODE_ID = "episode_id"


def image_key(camera: str) -> str:
    """Observation/task key of a canonical camera, e.g. ``primary -> image_primary``."""
    return IMAGE_PREFIX + camera


def camera_of(key: str) -> str:
    """Inverse of `image_key`."""
    if not key.startswith(IMAGE_PREFIX):
        raise ValueError(f"{key!r} is not an image key (expected prefix {IMAGE_PREFIX!r})")
    return key[len(IMAGE_PREFIX) :]


def describe_tree(tree, prefix: str = "") -> list[str]:
    """Lines ``key  shape  dtype`` for every leaf of a nested dict of arrays, sorted by key."""
    lines = []
    for key in sorted(tree):
        value = tree[key]
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.extend(describe_tree(value, path + "."))
        else:
            shape = tuple(getattr(value, "shape", ()))
            dtype = getattr(value, "dtype", type(value).__name__)
            lines.append(f"{path:<45} {str(shape):<24} {dtype}")
    return lines


SHOWN_KEYS = 10  # error texts list at most this many keys, however many a message holds


def describe_keys(keys) -> str:
    """``['a', 'b']`` sorted, or the first `SHOWN_KEYS` of them and how many more there are:
    an error about a message of a million keys stays a line long."""
    keys = list(keys)
    if len(keys) <= 10_000:
        names = sorted(str(k)[:64] for k in keys)
    else:  # sorting a huge message's keys would itself stall the caller
        names = [str(k)[:64] for k in keys[:SHOWN_KEYS]]
    if len(keys) <= SHOWN_KEYS:
        return str(names)
    return f"{names[:SHOWN_KEYS]} and {len(keys) - SHOWN_KEYS} more"
