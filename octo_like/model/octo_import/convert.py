"""Octo-1.5 checkpoint directories (as Octo's ``save_pretrained`` writes them) -> `OctoModel`.

    model = import_octo("octo-small-1.5", "t5-base")              # in memory
    convert_octo("octo-small-1.5", "t5-base", "octo_small_native")  # a native checkpoint

An Octo directory holds ``<step>/default`` (orbax PyTree of the parameters), ``config.json``,
``dataset_statistics.json`` and ``example_batch.msgpack``. The T5 directory (Hugging Face files:
config.json, spiece.model) gives the text tokenizer and the encoder's shape; the encoder's
weights come from Octo's own parameters, where Octo keeps them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from octo_like import storage
from octo_like.model.checkpoint_layout import quiet_orbax
from octo_like.model.language import load_t5_encoder
from octo_like.model.octo_import import inputs
from octo_like.model.octo_import.config import OctoLayoutError, octo_layout
from octo_like.model.octo_import.params import flatten, map_parameters
from octo_like.model.octo_model import OctoModel, action_statistics_entry
from octo_like.normalization import ArrayStatistics

OCTO_FILES = ("config.json", "dataset_statistics.json", "example_batch.msgpack")
T5_PREFIX = "task_tokenizers_language/hf_model/"


def _octo_steps(octo_dir: str) -> list[int]:
    return sorted(
        int(n) for n in os.listdir(octo_dir) if n.isdigit() and os.path.isdir(f"{octo_dir}/{n}")
    )


def read_octo_params(octo_dir: str, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """(step, nested numpy parameters) of an Octo directory; default: its latest step."""
    import orbax.checkpoint as ocp

    steps = _octo_steps(octo_dir)
    if not steps:
        raise FileNotFoundError(f"{octo_dir}: no <step>/ directory of parameters")
    step = steps[-1] if step is None else step
    path = os.path.join(octo_dir, str(step), "default")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: missing (steps: {steps})")
    inputs.check_parameter_directory(path)
    # As numpy, never with the saved sharding: the published steps were written on TPU hosts.
    # Octo's orbax (0.4) wrote no _CHECKPOINT_METADATA; today's orbax reads the tree without it.
    with quiet_orbax(), ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        params = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return step, params


def read_octo_directory(octo_dir: str) -> dict[str, Any]:
    """config.json, dataset_statistics.json and example_batch.msgpack, parsed (a damaged file
    is named)."""
    if not os.path.isdir(octo_dir):
        raise FileNotFoundError(f"{octo_dir}: not a directory")
    missing = [n for n in OCTO_FILES if not os.path.isfile(os.path.join(octo_dir, n))]
    if missing:
        raise FileNotFoundError(
            f"{octo_dir}: not an Octo save_pretrained directory (missing {', '.join(missing)})"
        )
    return {
        "config": inputs.read_json(os.path.join(octo_dir, "config.json")),
        "dataset_statistics": inputs.read_json(os.path.join(octo_dir, "dataset_statistics.json")),
        "example_batch": inputs.read_msgpack(os.path.join(octo_dir, "example_batch.msgpack")),
    }


def native_example_batch(octo_batch: Mapping[str, Any], cameras, goal_cameras) -> dict:
    """An octo_like example batch (what `OctoModel.from_config` reads) from Octo's."""
    observation = octo_batch["observation"]
    keys = [f"image_{c}" for c in cameras]
    missing = [k for k in keys if k not in observation]
    if missing:
        raise OctoLayoutError(f"example_batch.msgpack: observation lacks {missing}")
    batch, window = np.shape(observation[keys[0]])[:2]
    pad = observation.get("pad_mask_dict", {})
    task = octo_batch.get("task", {})
    return {
        "observation": {
            **{k: np.asarray(observation[k]) for k in keys},
            "timestep_pad_mask": np.asarray(
                observation.get("timestep_pad_mask", np.ones((batch, window), bool)), bool
            ),
            "pad_mask_dict": {
                k: np.asarray(pad.get(k, np.ones((batch, window))), bool) for k in keys
            },
        },
        "task": {
            **{
                f"image_{c}": np.asarray(
                    task.get(f"image_{c}", np.zeros_like(observation[f"image_{c}"][:, 0]))
                )
                for c in goal_cameras
            },
            "language_instruction": np.array([b""] * batch, dtype=object),
            "pad_mask_dict": {
                "language_instruction": np.ones(batch, bool),
                **{f"image_{c}": np.ones(batch, bool) for c in goal_cameras},
            },
        },
    }


def native_statistics(octo_statistics: Mapping[str, Any]) -> dict[str, dict]:
    """Octo's ``{name: {action: {mean, std, min, max, p01, p99, mask}, proprio: ...}}`` (or one
    dataset's ``{action: ...}``) as octo_like entries (normalization 'normal', Octo's mask)."""
    if "action" in octo_statistics:
        octo_statistics = {"octo": octo_statistics}
    entries = {}
    for name, stats in octo_statistics.items():
        if not isinstance(stats, Mapping) or "action" not in stats:
            raise OctoLayoutError(f"dataset_statistics.json: {name!r} has no 'action' statistics")
        arrays = {}
        for key in ("action", "proprio"):
            if key in stats:
                try:
                    arrays[key] = ArrayStatistics.from_dict(stats[key]).to_dict()
                except ValueError as error:
                    raise OctoLayoutError(
                        f"dataset_statistics.json: {name!r}.{key}: {error}"
                    ) from error
        mask = stats["action"].get("mask")
        entries[name] = action_statistics_entry(
            arrays, "normal", None if mask is None else [bool(m) for m in mask]
        )
    return entries


def _fill(tree: dict, mapped: Mapping[str, np.ndarray], prefix: str = "") -> dict:
    return {
        key: _fill(value, mapped, f"{prefix}{key}/")
        if isinstance(value, Mapping)
        else mapped[f"{prefix}{key}"]
        for key, value in tree.items()
    }


def import_octo(octo_dir: str, t5_dir: str, step: int | None = None) -> OctoModel:
    """An `OctoModel` computing what the Octo-1.5 checkpoint in `octo_dir` computes."""
    octo_dir, t5_dir = storage.absolute(octo_dir), storage.absolute(t5_dir)
    files = read_octo_directory(octo_dir)
    inputs.check_t5_directory(t5_dir)
    observation = files["example_batch"].get("observation", {})
    first_image = next((k for k in sorted(observation) if k.startswith("image_")), None)
    if first_image is None or np.ndim(observation[first_image]) < 2:
        raise OctoLayoutError(
            f"{octo_dir}/example_batch.msgpack: no observation image_* with [batch, window]"
        )
    window = int(np.shape(observation[first_image])[1])
    try:
        layout = octo_layout(files["config"], t5_dir, window)
    except OctoLayoutError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
        raise OctoLayoutError(
            f"{octo_dir}/config.json: an entry has an unexpected type or is missing "
            f"({type(error).__name__}: {error})"
        ) from error
    config = layout.model
    inputs.check_statistics(
        f"{octo_dir}/dataset_statistics.json", files["dataset_statistics"], config.action_dim
    )
    goal_cameras = [t.camera for t in config.image_tokenizers if t.goal_fusion]
    batch = native_example_batch(files["example_batch"], config.cameras, goal_cameras)
    statistics = native_statistics(files["dataset_statistics"])
    model = OctoModel.from_config(
        config, batch, jax.random.key(0), statistics, load_language_weights=False
    )
    _, octo_params = read_octo_params(octo_dir, step)
    state = nnx.state(model.module, nnx.Param)
    pure = state.to_pure_dict()
    shapes = {path: tuple(np.shape(v)) for path, v in flatten(pure).items()}
    t5_in_octo = any(T5_PREFIX in path for path in flatten(octo_params))
    if not t5_in_octo:  # Octo keeps the frozen encoder in its tree; else the T5 directory's
        shapes = {p: v for p, v in shapes.items() if not p.startswith("language_encoder/")}
    mapped = map_parameters(octo_params, shapes)
    inputs.check_finite_parameters(mapped)
    if not t5_in_octo:
        encoder, _ = load_t5_encoder(t5_dir)
        t5 = flatten(nnx.state(encoder, nnx.Param).to_pure_dict())
        mapped.update({f"language_encoder/{path}": np.asarray(v) for path, v in t5.items()})
    nnx.replace_by_pure_dict(
        state, _fill(pure, {k: jax.numpy.asarray(v) for k, v in mapped.items()})
    )
    nnx.update(model.module, state)
    return model


def check_output_dir(octo_dir: str, t5_dir: str, out_dir: str) -> None:
    """Refuses, before anything is read or written, an output directory that is (or holds, or
    lies inside) the Octo or T5 source, that already holds a checkpoint's steps or tokenizer
    (another model's: a training run's ``checkpoints/``, an earlier conversion), or that
    cannot be created or written (a file, under a file, read-only)."""
    out = storage.absolute(out_dir)
    if storage.has_scheme(out):
        return  # object stores: orbax's own errors name the URL
    out_path = os.path.realpath(out)
    for name, source in (("--octo_dir", octo_dir), ("--t5_dir", t5_dir)):
        source_path = os.path.realpath(storage.absolute(source))
        if os.path.commonpath([out_path, source_path]) in (out_path, source_path):
            raise ValueError(
                f"--out {out_dir} is {name} {source} or overlaps it: the conversion would "
                "write into its own source; give a new directory"
            )
    if os.path.lexists(out_path) and not os.path.isdir(out_path):
        raise NotADirectoryError(f"--out {out_dir} is a file, not a directory")
    if os.path.isdir(out_path):
        held = sorted(n for n in os.listdir(out_path) if n.isdigit() or n == "language_assets")
        if held:
            raise FileExistsError(
                f"--out {out_dir} already holds a checkpoint ({', '.join(held[:5])}): another "
                "model's steps and tokenizer, which a conversion must not mix with; give a new "
                "or empty directory"
            )
    existing = out_path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"--out {out_dir} lies under the file {existing}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out_dir}: {existing} is not writable")


def convert_octo(octo_dir: str, t5_dir: str, out_dir: str, step: int | None = None) -> dict:
    """Writes the imported model as a native checkpoint (config, statistics with Octo's mask,
    tokenizer assets, input spec, checksums) at ``out_dir/<step>``; returns a summary:
    ``{"step_dir", "step", "parameters", "datasets", "transformer", "cameras"}``."""
    check_output_dir(octo_dir, t5_dir, out_dir)
    model = import_octo(octo_dir, t5_dir, step)
    saved_step = _octo_steps(storage.absolute(octo_dir))[-1] if step is None else step
    model.save_pretrained(saved_step, out_dir)
    params = nnx.state(model.module, nnx.Param)
    return {
        "step_dir": storage.join(storage.absolute(out_dir), str(saved_step)),
        "step": saved_step,
        "parameters": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "datasets": sorted(model.dataset_statistics),
        "transformer": model.config.transformer,
        "cameras": list(model.config.cameras),
    }
