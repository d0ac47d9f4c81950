"""What the network reads, made and checked against a model's input spec: the paths a config
reads, tasks from texts and goal images (`OctoModel.create_tasks`), an example batch of the
spec's shapes, host-side tokenization of instructions, and a call's observations and tasks
(octo_like's or Octo's forms) turned into the network's inputs (`OctoModel.network_inputs`).

`OctoModel` keeps the call forms; they delegate here, so the input handling reads in one place
apart from the model's creation, inference and checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from octo_like.model import call_checks, octo_inputs
from octo_like.model import input_spec as spec_lib
from octo_like.model.config import ModelConfig
from octo_like.model.language import TextTokenizer


def required_inputs(config: ModelConfig) -> dict[str, set[str]]:
    """Observation / task paths the network reads under `config`."""
    observation = {"timestep_pad_mask"}
    task: set[str] = set()
    for tok in config.image_tokenizers:
        key = f"image_{tok.camera}"
        observation |= {key, f"pad_mask_dict/{key}"}
        if tok.goal_fusion and config.goal_padding == "grey":
            task |= {key, f"pad_mask_dict/{key}"}
        # goal_padding "pixels" (Octo): a goal left out is black, and no mask is read
    for camera in config.goal_image_cameras:
        task |= {f"image_{camera}", f"pad_mask_dict/image_{camera}"}
    if config.proprio is not None:
        observation |= {"proprio", "proprio_pad_mask", "pad_mask_dict/proprio"}
    if config.language.encoder != "none":
        task |= {"language_tokens", "language_mask", "pad_mask_dict/language_instruction"}
    return {"observation": observation, "task": task}


def tokenize_tasks(tasks: Mapping[str, Any], tokenizer: TextTokenizer) -> dict[str, Any]:
    """Adds ``language_tokens int32[b, L]`` and ``language_mask bool[b, L]`` (host side)."""
    tokens = tokenizer(list(np.asarray(tasks["language_instruction"]).reshape(-1)))
    return {**tasks, "language_tokens": tokens["tokens"], "language_mask": tokens["mask"]}


def create_tasks(
    input_spec: Mapping[str, Any],
    text_tokenizer: TextTokenizer | None,
    texts: Sequence[str] | str | None = None,
    goals: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """`OctoModel.create_tasks` for a model of `input_spec` and `text_tokenizer`: tokenized
    `texts` and/or goal images ``{camera: uint8[b,h,w,3]}``; a missing modality is zero-filled
    and masked out (pad_mask_dict False)."""
    if texts is None and goals is None:
        raise ValueError("create_tasks needs texts, goals or both")
    if texts is not None:  # one str is one task, not a sequence of characters
        texts = call_checks.check_texts(texts)
    if goals is not None:  # Octo keys goals by image key (image_primary), or by camera
        goal_shapes = {
            path[len("image_") :]: tuple(entry["shape"])
            for path, entry in input_spec["task"].items()
            if path.startswith("image_")
        }
        goals = call_checks.check_goals(goals, goal_shapes)
        if texts is None and not goals:
            raise ValueError(
                f"create_tasks: goals hold none of the model's goal images "
                f"{sorted('image_' + c for c in goal_shapes)}, and there are no texts"
            )
    batch = len(texts) if texts is not None else len(next(iter(goals.values())))
    if texts is not None and goals:
        sizes = {k: len(v) for k, v in goals.items() if np.ndim(v) > 0}
        if any(size != batch for size in sizes.values()):
            raise ValueError(f"create_tasks: {batch} texts but goal batch sizes {sizes}")
    tasks: dict[str, Any] = {"pad_mask_dict": {}}
    texts = list(texts) if texts is not None else [""] * batch
    tasks["language_instruction"] = np.array(
        [t.encode() if isinstance(t, str) else t for t in texts], dtype=object
    )
    tasks["pad_mask_dict"]["language_instruction"] = np.array([bool(t) for t in texts])
    for path, entry in input_spec["task"].items():
        parts = path.split("/")
        if parts[0] != "pad_mask_dict" and parts[0].startswith("image_"):
            camera = parts[0][len("image_") :]
            if goals is not None and camera in goals:
                image = np.asarray(goals[camera], np.uint8)
                present = np.ones(batch, bool)
            else:
                image = np.zeros((batch, *entry["shape"]), np.uint8)
                present = np.zeros(batch, bool)
            tasks[parts[0]] = image
            tasks["pad_mask_dict"][parts[0]] = present
    if text_tokenizer is not None:
        tasks = tokenize_tasks(tasks, text_tokenizer)
    return tasks


def example_batch(input_spec: Mapping[str, Any]) -> dict[str, Any]:
    """Zeros of the input spec's shapes and dtypes (masks True), batch 1 (Octo's
    `example_batch`)."""
    batch: dict[str, Any] = {}
    for part in ("observation", "task"):
        tree: dict[str, Any] = {}
        for path, entry in input_spec.get(part, {}).items():
            *parents, leaf = path.split("/")
            node = tree
            for name in parents:
                node = node.setdefault(name, {})
            # Masks True: a valid example, as Octo's saved example batch is (an all-False
            # timestep_pad_mask has nothing to act on and is refused).
            fill = np.ones if np.dtype(entry["dtype"]) == bool else np.zeros
            node[leaf] = fill((1, *entry["shape"]), entry["dtype"])
        batch[part] = tree
    return batch


def network_inputs(
    observations: Mapping[str, Any],
    tasks: Mapping[str, Any],
    timestep_pad_mask: Any,
    *,
    config: ModelConfig,
    input_spec: Mapping[str, Any],
    text_tokenizer: TextTokenizer | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`OctoModel.network_inputs`: (observations, tasks) as the network of `config` reads them,
    from octo_like's or Octo's dictionaries, checked against `input_spec` (any window up to
    ``config.max_horizon``); `timestep_pad_mask` bool[b, w], if given, replaces the
    observations'."""
    call_checks.check_call(observations, tasks, timestep_pad_mask, input_spec)
    required = required_inputs(config)
    images = {
        k: tuple(v["shape"][1:])
        for k, v in input_spec["observation"].items()
        if k in required["observation"] and k.startswith("image_")
    }
    observations = octo_inputs.native_observations(observations, images)
    if timestep_pad_mask is not None:
        observations["timestep_pad_mask"] = np.asarray(timestep_pad_mask, bool)
    tasks = octo_inputs.native_tasks(tasks)
    untokenized = "language_tokens" not in tasks and "language_instruction" in tasks
    if untokenized and text_tokenizer is not None:
        tasks = tokenize_tasks(tasks, text_tokenizer)
    if text_tokenizer is not None and "language_tokens" in tasks:
        call_checks.check_token_ids(tasks["language_tokens"], text_tokenizer.vocab_size)
    observations = octo_inputs.fill_pad_masks("observation", observations, required)
    tasks = octo_inputs.fill_pad_masks("task", tasks, required)
    spec_lib.check_inputs(
        input_spec, "observation", observations, required["observation"],
        free_window=config.max_horizon,
    )  # fmt: skip
    spec_lib.check_inputs(input_spec, "task", _network_tasks(tasks), required["task"])
    return dict(observations), _network_tasks(tasks)


def embodiment_action_dim(statistics: Mapping[str, Any] | None) -> int | None:
    """The robot's action dims from the statistics `sample_actions` unnormalizes with (Octo:
    ``len(statistics["mean"])``); None without statistics."""
    if not statistics:
        return None
    action = statistics["statistics"]["action"] if "statistics" in statistics else statistics
    return len(action["mean"])


def _network_tasks(tasks: Mapping[str, Any]) -> dict[str, Any]:
    """The task leaves the network reads (drops raw instruction strings)."""
    return {k: v for k, v in tasks.items() if k != "language_instruction"}
