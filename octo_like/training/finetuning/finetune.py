"""Fine-tuning: start the shared training loop from a pretrained checkpoint.

The new model is built from the fine-tuning `ModelConfig` and an example batch of the NEW data,
so it may have other cameras, proprio, another action head, action dim or chunk length. Every
parameter whose path and shape match the pretrained one is copied (reused); everything else
keeps its fresh initialization. `ReuseReport` lists reused / new / dropped / shape-mismatched
parameters, and `ReuseReport.table()` prints them grouped by module.

Modes decide which REUSED parameters keep training (`MODE_TRAINABLE`); reused parameters outside
the mode's patterns are frozen. Newly initialized (new or shape-mismatched) parameters always
train: freezing random weights would only waste them.

- ``full``: everything trains (a frozen T5 language encoder stays frozen, as in pretraining).
- ``head_only``: only the action head (``head/``); transformer, tokenizers, readout and
  language encoder are frozen.
- ``head_mlp_only``: only the head's MLP trunk and output layer train: for diffusion / flow heads
  ``head/network/blocks`` and ``head/network/proj_out``, while the denoiser's input side (the
  ``proj_in`` projection of readout, time and noisy chunk, and the time embedding) is frozen;
  for the l1 / mse / discrete heads, which are one Dense layer (``head/proj``), that layer.
- ``lora``: only the low-rank adapters (``.../lora_a``, ``.../lora_b``, see
  `octo_like.model.lora`) and the newly initialized parameters train.
- ``scratch``: the baseline that fine-tuning has to beat. The same model, data, settings and
  steps, but no pretrained weight is reused: everything starts from its fresh initialization
  (only a frozen T5 encoder is still copied, as it is not learned in pretraining either). The
  checkpoint then supplies only the architecture and the language assets.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import numpy as np
from flax import nnx

from octo_like.config.typed import ConfigError
from octo_like.model.base_checkpoint import BaseReference, fill, flat_params, select
from octo_like.model.lora import ADAPTER_PATTERN
from octo_like.model.octo_model import OctoModel, merge_lora
from octo_like.training.optim import masks
from octo_like.training.parallel import sharding

log = logging.getLogger(__name__)

MODES = ("full", "head_only", "head_mlp_only", "lora", "scratch")
# Regexes (re.search on parameter paths) of the REUSED parameters that train in each mode.
MODE_TRAINABLE: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "full": ("",),  # the empty regex matches every path
        "head_only": (r"^head/",),
        "head_mlp_only": (r"^head/network/(blocks|proj_out)/", r"^head/proj/"),
        "lora": (ADAPTER_PATTERN,),
        "scratch": ("",),  # nothing is reused but a frozen T5 encoder, which stays frozen
    }
)
Shape = tuple[int, ...]
_SHOWN_PATTERNS = 12
T5_PREFIX = "language_encoder/"


@dataclasses.dataclass(frozen=True)
class ReuseReport:
    """Parameters by fate, each ``{path: shape}`` (mismatched: ``{path: (pretrained, new)}``;
    reinitialized: in the checkpoint, but named by the run's ``reinitialize`` regexes)."""

    reused: Mapping[str, Shape]
    new: Mapping[str, Shape]
    dropped: Mapping[str, Shape]
    mismatched: Mapping[str, tuple[Shape, Shape]]
    reinitialized: Mapping[str, Shape] = dataclasses.field(default_factory=dict)

    @property
    def initialized(self) -> set[str]:
        """Paths that keep their fresh initialization (new, shape-mismatched, reinitialized)."""
        return set(self.new) | set(self.mismatched) | set(self.reinitialized)

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{status: (tensors, scalars)}``; mismatched counts the NEW shapes."""
        shapes = {
            "reused": list(self.reused.values()),
            "new": list(self.new.values()),
            "mismatched": [new for _, new in self.mismatched.values()],
            "reinitialized": list(self.reinitialized.values()),
            "dropped": list(self.dropped.values()),
        }
        return {k: (len(v), sum(int(np.prod(s)) for s in v)) for k, v in shapes.items()}

    def table(self) -> str:
        """Human-readable summary: one row per (status, module), mismatches with both shapes."""
        rows: dict[tuple[str, str], list[int]] = {}
        for status, entries in (
            ("reused", self.reused),
            ("new", self.new),
            ("mismatched", {p: new for p, (_, new) in self.mismatched.items()}),
            ("reinitialized", self.reinitialized),
            ("dropped", self.dropped),
        ):
            for path, shape in entries.items():
                row = rows.setdefault((status, module_of(path)), [0, 0])
                row[0] += 1
                row[1] += int(np.prod(shape))
        lines = [f"  {'status':<14}{'tensors':>8}{'parameters':>13}  module"]
        lines += [
            f"  {status:<14}{tensors:>8}{scalars:>13,}  {module}"
            for (status, module), (tensors, scalars) in rows.items()
        ]
        if self.mismatched:
            lines.append("  shape-mismatched (freshly initialized): pretrained -> new")
            lines += [
                f"    {path}: {list(old)} -> {list(new)}"
                for path, (old, new) in self.mismatched.items()
            ]
        totals = ", ".join(
            f"{status} {tensors} tensors / {scalars:,}"
            for status, (tensors, scalars) in self.counts().items()
        )
        return "\n".join([*lines, f"  totals: {totals}"])


def module_of(path: str) -> str:
    """The row a parameter is reported under: the first two components of its path, without a
    trailing kernel / bias / scale (``transformer/transformer``, ``image_positions/wrist``,
    ``language_projection``)."""
    parts = path.split("/")
    if len(parts) > 1 and parts[-1] in ("kernel", "bias", "scale"):
        parts = parts[:-1]
    return "/".join(parts[:2])


def reuse_parameters(
    new_params: Any, pretrained_params: Any, reinitialize: tuple[str, ...] = ()
) -> tuple[dict, ReuseReport]:
    """Copies every pretrained parameter whose path and shape match into `new_params`, but
    those whose path a `reinitialize` regex finds (``re.search``): they keep their fresh values.

    Both are an ``nnx.State`` of Params or its pure dict. Returns the merged pure dict (the
    structure and dtypes of `new_params`) and the report.
    """
    new = flat_params(new_params)
    old = flat_params(pretrained_params)
    fresh_again = [re.compile(p) for p in reinitialize]
    values, reused, fresh, mismatched, reinitialized = {}, {}, {}, {}, {}
    for path, leaf in new.items():
        shape = tuple(np.shape(leaf))
        values[path] = leaf
        if path not in old:
            fresh[path] = shape
        elif any(r.search(path) for r in fresh_again):
            reinitialized[path] = shape
        elif tuple(np.shape(old[path])) != shape:
            mismatched[path] = (tuple(np.shape(old[path])), shape)
        else:
            values[path] = jax.numpy.asarray(old[path], dtype=leaf.dtype)
            reused[path] = shape
    dropped = {p: tuple(np.shape(v)) for p, v in old.items() if p not in new}
    report = ReuseReport(reused, fresh, dropped, mismatched, reinitialized)
    return fill(new_params, values), report


def reusable_from_scratch(pretrained_params: Any, same_t5: bool) -> dict[str, Any]:
    """What a ``scratch`` run takes from the checkpoint: a frozen T5 encoder's weights (both
    arms of a comparison condition on the same published text model), nothing else."""
    return select(pretrained_params, lambda path: same_t5 and path.startswith(T5_PREFIX))


def frozen_by_mode(report: ReuseReport, mode: str) -> set[str]:
    """Reused parameters that `mode` freezes (see the module docstring)."""
    if mode not in MODE_TRAINABLE:
        raise ConfigError(f"unknown fine-tuning mode {mode!r}; choose from {', '.join(MODES)}")
    trainable = [re.compile(p) for p in MODE_TRAINABLE[mode]]
    return {p for p in report.reused if not any(r.search(p) for r in trainable)}


def prefix_patterns(selected: Iterable[str], paths: Iterable[str]) -> tuple[str, ...]:
    """Short regexes matching exactly the `selected` paths among `paths`: for each selected
    path, its shortest ``/``-prefix under which every path is selected, as ``^prefix(/|$)``."""
    selected, paths = set(selected), list(paths)
    unknown = selected.difference(paths)
    if unknown:
        raise ValueError(f"selected paths not among the parameters: {sorted(unknown)[:5]}")
    # Unselected paths and every prefix of them: a prefix is usable iff it is not in here.
    blocked = set()
    for path in paths:
        if path not in selected:
            parts = path.split("/")
            blocked.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    prefixes = set()
    for path in selected:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix not in blocked:
                prefixes.add(prefix)
                break
    return tuple(f"^{re.escape(prefix)}(/|$)" for prefix in sorted(prefixes))


@dataclasses.dataclass(frozen=True)
class FinetuneSource:
    """The pretrained checkpoint and how to adapt it (the typed part of a fine-tuning config).

    pretrained_path: the pretrained run's checkpoint directory (resolved and absolute).
    pretrained_step: its step (resolved: never None here).
    save_frozen_params: False stores only the parameters that differ from the pretrained
      checkpoint plus a reference to it (see `octo_like.model.base_checkpoint`).
    """

    pretrained_path: str
    pretrained_step: int
    mode: str
    task: str
    save_frozen_params: bool
    reinitialize: tuple[str, ...] = ()


class PretrainedInitializer:
    """The `init_model` hook of `octo_like.training.run.loop.run` for fine-tuning.

    Called with an example batch of the new data: loads the pretrained model (adapters of a
    LoRA-fine-tuned one merged first), builds the new model from `model_config`, copies what
    matches, reports, and names what the mode freezes. `self.report` holds the last report.
    `frozen_patterns`: the run's other frozen regexes (language encoder, user patterns), so that
    the base reference covers every frozen reused parameter. `mesh_config`: the run's sharding
    rules, which the pretrained parameters are restored into directly.
    """

    def __init__(
        self,
        source: FinetuneSource,
        model_config,
        frozen_patterns: tuple[str, ...] = (),
        echo: Callable[[str], None] = log.info,
        mesh_config: sharding.MeshConfig | None = None,
    ):
        self.source = source
        self.mesh_config = mesh_config or sharding.MeshConfig()
        self.model_config = model_config
        self.frozen_patterns = tuple(frozen_patterns)
        self.echo = echo
        self.report: ReuseReport | None = None

    def __call__(
        self,
        batch: Mapping[str, Any],
        rng: jax.Array,
        statistics: dict,
        mesh: jax.sharding.Mesh | None = None,
    ):
        from octo_like.training.run.model_start import InitialModel

        source = self.source
        _check_action_dim(batch, self.model_config.action_dim)
        # Straight onto the run's devices in its own layout (FSDP may span hosts), not via
        # one local device: `reuse_parameters` keeps these arrays as they are.
        layout = new_layout = None
        if mesh is not None:  # the default size rule (path rules are for the new model)
            rules = dataclasses.replace(self.mesh_config, rules=())
            layout = lambda abstract: sharding.parameter_shardings(abstract, mesh, rules)
            new_layout = lambda abstract: sharding.parameter_shardings(
                abstract, mesh, self.mesh_config
            )
        pretrained = merge_lora(
            OctoModel.load_pretrained(
                source.pretrained_path, source.pretrained_step, sharding=layout
            )
        )
        pretrained_params = nnx.state(pretrained.module, nnx.Param)
        same_t5 = pretrained.config.language.encoder == self.model_config.language.encoder == "t5"
        model = OctoModel.from_config(
            self.model_config,
            batch,
            rng,
            statistics,
            load_language_weights=not same_t5,
            sharding=new_layout,
        )
        state = nnx.state(model.module, nnx.Param)
        _check_reinitialize(source.reinitialize, state, same_t5)
        if source.mode == "scratch":
            pretrained_params = reusable_from_scratch(pretrained_params, same_t5)
        merged, report = reuse_parameters(state, pretrained_params, source.reinitialize)
        nnx.replace_by_pure_dict(state, merged)
        nnx.update(model.module, state)
        self.report = report

        paths = list(flat_params(state))
        frozen = frozen_by_mode(report, source.mode)
        patterns = prefix_patterns(frozen, paths)
        shown = "".join(f"\n    {p}" for p in patterns[:_SHOWN_PATTERNS])
        if len(patterns) > _SHOWN_PATTERNS:
            shown += f"\n    ... ({len(patterns) - _SHOWN_PATTERNS} more)"
        self.echo(
            f"parameter reuse from {source.pretrained_path} (step {source.pretrained_step}), "
            f"mode {source.mode}:\n{report.table()}\n"
            f"  frozen by the mode: {len(frozen)} reused tensors, by {len(patterns)} regexes:"
            + shown
        )
        log.debug("frozen by mode %s: %s", source.mode, patterns)
        base = None
        if not source.save_frozen_params:
            mask = masks.regex_mask(state, (*self.frozen_patterns, *patterns), name="frozen")
            names = jax.tree.leaves(masks.path_strings(state))
            flags = dict(zip(names, jax.tree.leaves(mask), strict=True))
            referenced = [p for p in report.reused if flags[p]]
            if referenced:
                base = BaseReference.create(
                    source.pretrained_path, source.pretrained_step, pretrained_params, referenced
                )
        return InitialModel(model, patterns, base)


def _check_reinitialize(patterns: tuple[str, ...], state, same_t5: bool) -> None:
    """A `reinitialize` regex that finds no parameter of `state` is a typo, not a no-op
    (`masks.regex_mask` refuses it); one that finds the frozen T5 encoder would leave it random
    and frozen."""
    masks.regex_mask(state, patterns, name="config.reinitialize")
    t5 = [p for p in jax.tree.leaves(masks.path_strings(state)) if p.startswith(T5_PREFIX)]
    frozen_t5 = [p for p in patterns if same_t5 and any(re.search(p, path) for path in t5)]
    if frozen_t5:
        raise ConfigError(
            f"config.reinitialize: {frozen_t5} match the frozen T5 language encoder, which "
            "no run trains: it would stay random"
        )


def _check_action_dim(batch: Mapping[str, Any], action_dim: int) -> None:
    data_dim = np.shape(batch["action"])[-1]
    if data_dim != action_dim:
        raise ConfigError(
            f"the fine-tuning data has {data_dim}-dim actions but model.action_dim is "
            f"{action_dim}: set --config.model.action_dim={data_dim}"
        )
