"""Checkpoints that store only the parameters that differ from a base checkpoint.

A LoRA (or head-only) fine-tuning leaves most of its pretrained weights frozen: bit-identical to
the base checkpoint it started from. Such a checkpoint's ``params`` item holds only the other
parameters, and a ``base_params`` JSON item says where the rest comes from::

    {"checkpoint_dir": "/abs/runs/pretrain/checkpoints", "step": 300,
     "paths": ["transformer/transformer/blocks/0/attention/query/kernel", ...],
     "fingerprint": "<sha256 of those parameters' paths, shapes, dtypes and bytes>"}

`OctoModel.load_pretrained` sees the item, loads the base (which may itself be such a
checkpoint) and fills the listed paths from it; a base that was moved fails with its path in the
error, a base whose listed parameters changed fails on the fingerprint. Paths are the
slash-joined parameter paths of `octo_like.training.optim.masks` (``head/network/proj_in/kernel``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

BASE_PARAMS = "base_params"  # the orbax JSON item of a checkpoint step


def _pure(tree: Any) -> Any:
    return tree.to_pure_dict() if isinstance(tree, nnx.State) else tree


def _walk(tree: Mapping, prefix: str = ""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _walk(value, path + "/")
        else:
            yield path, value


def flat_params(tree: Any) -> dict[str, Any]:
    """``{slash path: leaf}`` of an ``nnx.State`` of Params or its pure nested dict."""
    return dict(_walk(_pure(tree)))


def select(tree: Any, keep: Callable[[str], bool]) -> dict:
    """The pure nested dict with only the leaves whose path `keep` accepts (key types kept, so
    the result matches the saved tree orbax restores into); empty sub-dicts are dropped."""

    def visit(node: Mapping, prefix: str) -> dict:
        out = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                child = visit(value, path + "/")
                if child:
                    out[key] = child
            elif keep(path):
                out[key] = value
        return out

    return visit(_pure(tree), "")


def fill(tree: Any, values: Mapping[str, Any]) -> dict:
    """`tree`'s structure with every leaf taken from ``values[path]``; a missing path is an
    error naming it."""

    def visit(node: Mapping, prefix: str) -> dict:
        out = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                out[key] = visit(value, path + "/")
            elif path in values:
                out[key] = values[path]
            else:
                raise KeyError(f"parameter {path!r} is neither saved nor in the base checkpoint")
        return out

    return visit(_pure(tree), "")


def fingerprint(flat: Mapping[str, Any], paths: Iterable[str]) -> str:
    """sha256 over the listed parameters' paths, shapes, dtypes and bytes (order-independent)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        array = _host_value(flat[path])
        digest.update(f"{path}|{array.shape}|{array.dtype.str}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _host_value(value: Any) -> np.ndarray:
    """The whole array on this host, gathered from other processes' devices when sharded
    across them (a collective: every process must call it)."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(jax.device_get(value))


@dataclasses.dataclass(frozen=True)
class BaseReference:
    """The parameters (`paths`) a checkpoint reads from its base instead of storing them."""

    checkpoint_dir: str
    step: int
    paths: tuple[str, ...]
    fingerprint: str

    @classmethod
    def create(
        cls, checkpoint_dir: str, step: int, base_params: Any, paths: Iterable[str]
    ) -> BaseReference:
        """References `paths` of `base_params` (the base checkpoint's parameters)."""
        flat = flat_params(base_params)
        paths = tuple(sorted(paths))
        missing = [p for p in paths if p not in flat]
        if missing:
            raise KeyError(f"paths not in the base parameters: {missing[:5]}")
        return cls(checkpoint_dir, int(step), paths, fingerprint(flat, paths))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "paths": list(self.paths)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaseReference:
        return cls(data["checkpoint_dir"], int(data["step"]), tuple(data["paths"]),
                   data["fingerprint"])  # fmt: skip

    def strip(self, params: Any) -> dict:
        """`params` (State or pure dict) without the referenced paths: what gets saved."""
        referenced = set(self.paths)
        return select(params, lambda path: path not in referenced)

    def complete(self, structure: Any, saved: Any, base_params: Any) -> dict:
        """All parameters in `structure`'s pure-dict layout: `saved` plus the referenced ones
        from `base_params`, after checking they are the ones this checkpoint was trained on."""
        base = flat_params(base_params)
        where = f"base checkpoint {self.checkpoint_dir} (step {self.step})"
        missing = [p for p in self.paths if p not in base]
        if missing:
            raise ValueError(f"{where} lacks referenced parameters, e.g. {missing[:3]}")
        if fingerprint(base, self.paths) != self.fingerprint:
            raise ValueError(
                f"{where} has changed since this checkpoint was made: the {len(self.paths)} "
                "parameters it reads from there no longer match their fingerprint"
            )
        values = {**{p: base[p] for p in self.paths}, **flat_params(saved)}
        return fill(structure, values)
