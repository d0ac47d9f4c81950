"""Per-parameter masks and values chosen by regexes over slash-joined parameter paths.

Every function takes a parameter tree, either an `nnx.State` of `nnx.Param` (or the gradients of
one) or its pure nested dict (`state.to_pure_dict()`), and returns a tree of the SAME structure
(a `State` keeps its `Param` wrappers around the new leaves), so the result can be used directly
as an optax mask or label tree. Paths look like `transformer/transformer/blocks/0/mlp/fc1/kernel`.

Patterns that select nothing are errors (`ConfigError`, naming the pattern and example paths):
a typo in a freeze rule must not silently train everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from octo_like.config.typed import ConfigError

PyTree = Any

# A path component naming a normalization layer: `norm`, `ln_final`, `attention_norm`, `norms`.
_NORM_COMPONENT = re.compile(r"norm|^ln(_|\d|$)|_ln(_|\d|$)", re.IGNORECASE)
_EXAMPLES = 8


def _key_name(key: Any) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _path_string(path: tuple) -> str:
    # An nnx.Variable is a pytree node whose single child is reached by `.value`; the parameter's
    # name is the path to the Variable, so that trailing attribute is dropped.
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        path = path[:-1]
    return "/".join(_key_name(key) for key in path)


def _flatten(tree: PyTree) -> tuple[list[str], list[Any], Any]:
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [_path_string(path) for path, _ in leaves_with_paths]
    return paths, [leaf for _, leaf in leaves_with_paths], treedef


def path_strings(tree: PyTree) -> PyTree:
    """Same-structure tree whose leaves are the slash-joined paths, e.g. `head/proj/kernel`."""
    return map_with_paths(lambda path, _: path, tree)


def compile_patterns(patterns: Sequence[str], name: str) -> list[re.Pattern]:
    """`patterns` compiled; a string for a sequence, a non-string or a bad regex is an error
    naming `name` (configs check their regexes with it before any weight loads)."""
    if isinstance(patterns, str):
        raise TypeError(
            f"{name}: expected a sequence of regexes, got the string {patterns!r}; "
            f"write ({patterns!r},) for a single pattern"
        )
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{name}: pattern {pattern!r} is a {type(pattern).__name__}, not str")
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(f"{name}: invalid regex {pattern!r}: {error}") from None
    return compiled


def _no_match_error(name: str, pattern: str, paths: Sequence[str], why: str) -> ConfigError:
    examples = "\n  ".join(paths[:_EXAMPLES])
    more = f"\n  ... ({len(paths) - _EXAMPLES} more)" if len(paths) > _EXAMPLES else ""
    return ConfigError(
        f"{name}: pattern {pattern!r} {why} (re.search on slash-joined paths). "
        f"Example parameter paths:\n  {examples}{more}"
    )


def regex_mask(tree: PyTree, patterns: Sequence[str], *, name: str) -> PyTree:
    """True where ANY pattern `re.search`-matches the path. Empty `patterns` -> all False.

    Raises ConfigError (a ValueError) naming `name`, the pattern and example parameter paths
    when a pattern matches no parameter.
    """
    compiled = compile_patterns(patterns, name)
    paths, _, treedef = _flatten(tree)
    matches = [[bool(regex.search(path)) for path in paths] for regex in compiled]
    for regex, hits in zip(compiled, matches, strict=True):
        if not any(hits):
            raise _no_match_error(name, regex.pattern, paths, "matches no parameter")
    mask = (
        [any(column) for column in zip(*matches, strict=True)] if compiled else [False] * len(paths)
    )
    return jax.tree_util.tree_unflatten(treedef, mask)


def _ndim(leaf: Any) -> int:
    shape = getattr(leaf, "shape", None)
    return len(shape) if shape is not None else np.ndim(leaf)


def decays(path: str, ndim: int) -> bool:
    """Whether a parameter gets weight decay: matrices and conv kernels yes; biases, norm
    scales/offsets, embedding tables and positional embeddings no (decaying those pulls tokens
    and normalization gains toward zero without regularizing anything useful)."""
    if ndim < 2:
        return False
    parts = path.split("/")
    leaf = parts[-1].lower()
    # Biases and scales are never decayed whatever their shape (attention biases can be 2-D).
    if leaf.endswith(("bias", "scale")) or "embed" in leaf:
        return False
    return not any("position" in part.lower() or _NORM_COMPONENT.search(part) for part in parts)


WEIGHT_DECAY_RULES = ("shape", "kernel", "all")


def weight_decay_mask(tree: PyTree, rule: str = "shape") -> PyTree:
    """True for parameters that get weight decay. "shape": `decays` (names AND ndim);
    "kernel": every path containing ``kernel`` (Octo's rule: on the converted layout the same
    parameters as on Octo's own paths, `tests/training/test_finetune_octo_steps.py`); "all":
    every parameter (optax.adamw without a mask)."""
    if rule == "shape":
        return map_with_paths(lambda path, leaf: decays(path, _ndim(leaf)), tree)
    if rule == "kernel":
        return map_with_paths(lambda path, _: "kernel" in path, tree)
    if rule == "all":
        return map_with_paths(lambda path, _: True, tree)
    raise ValueError(f"unknown weight-decay rule {rule!r}; choose from {WEIGHT_DECAY_RULES}")


def multiplier_rules(
    rules: Mapping[str, float] | Sequence[tuple[str, float]],
) -> list[tuple[str, float]]:
    """LR multiplier rules as an ordered list of (regex, multiplier) pairs."""
    items = list(rules.items()) if isinstance(rules, Mapping) else [tuple(r) for r in rules]
    for item in items:
        if len(item) != 2:
            raise ValueError(f"lr_multipliers: expected (regex, multiplier) pairs, got {item!r}")
    return items


def lr_multipliers(
    tree: PyTree, rules: Mapping[str, float] | Sequence[tuple[str, float]]
) -> PyTree:
    """Float per parameter: the multiplier of the FIRST rule (in order) whose regex matches the
    path, 1.0 where none does. A rule matching nothing, or only paths an earlier rule already
    claimed, has no effect and raises ConfigError. Multipliers must be finite and >= 0."""
    items = multiplier_rules(rules)
    compiled = compile_patterns([pattern for pattern, _ in items], "lr_multipliers")
    for pattern, value in items:
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise ValueError(
                f"lr_multipliers: multiplier for {pattern!r} must be a finite number >= 0, "
                f"got {value!r}"
            )
    paths, _, treedef = _flatten(tree)
    values: list[float | None] = [None] * len(paths)
    for regex, (_, value) in zip(compiled, items, strict=True):
        hits = [i for i, path in enumerate(paths) if regex.search(path)]
        if not hits:
            raise _no_match_error("lr_multipliers", regex.pattern, paths, "matches no parameter")
        claimed = [i for i in hits if values[i] is None]
        if not claimed:
            raise _no_match_error(
                "lr_multipliers",
                regex.pattern,
                [paths[i] for i in hits],
                "only matches parameters claimed by an earlier rule (first match wins)",
            )
        for i in claimed:
            values[i] = float(value)
    multipliers = [1.0 if value is None else value for value in values]
    return jax.tree_util.tree_unflatten(treedef, multipliers)


def count_parameters(tree: PyTree, mask: PyTree | None = None) -> int:
    """Number of scalars in `tree`, or only in leaves where the same-structure `mask` is True."""
    leaves = jax.tree_util.tree_leaves(tree)
    sizes = [int(np.prod(getattr(leaf, "shape", np.shape(leaf)))) for leaf in leaves]
    if mask is None:
        return sum(sizes)
    flags = jax.tree_util.tree_leaves(mask)
    if len(flags) != len(sizes):
        raise ValueError(f"mask has {len(flags)} leaves but the tree has {len(sizes)}")
    return sum(size for size, flag in zip(sizes, flags, strict=True) if flag)


def map_with_paths(fn: Callable[[str, Any], Any], tree: PyTree) -> PyTree:
    """Same-structure tree of `fn(path, leaf)`; handy for custom masks."""
    paths, leaves, treedef = _flatten(tree)
    return jax.tree_util.tree_unflatten(
        treedef, [fn(p, x) for p, x in zip(paths, leaves, strict=True)]
    )
