"""`oxe_magic_soup_paths`, the dress rehearsal's mix in `make test`, takes every conversion path
that the 25 datasets of `oxe_magic_soup` take, so the full rehearsal (`make rehearsal`) can stay
out of the default run without a path losing its end-to-end run."""

from __future__ import annotations

import inspect

from octo_like.data.oxe.mixes import MIXES
from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.data.oxe.standardize import STANDARDIZERS


def conversion_paths(name: str) -> set[str]:
    """What `name`'s conversion exercises: its standardization family and each option that
    changes the code path taken (gripper rule, rotation kind, offsets, nested / ZLIB / absent
    keys, the proprio recipe's kind), its camera layout and where its instruction comes from."""
    spec = get_dataset_spec(name)
    standardizer = STANDARDIZERS[spec.standardize]
    family = standardizer.family
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(family).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    paths = {f"family {family.__name__}"}
    for key, value in {**defaults, **standardizer.params}.items():
        if key == "proprio":
            paths.add("no proprio" if value is None else "proprio recipe")
            if value and any((start or 0) < 0 for _, start, _ in value):
                paths.add("proprio slice from the end")
            if value and any("/" in source for source, _, _ in value):
                paths.add("proprio from a nested key")
        elif key == "zlib_keys":
            paths.add("ZLIB observations" if value else "no ZLIB")
        elif value is None:
            paths.add(f"{key} absent")
        elif isinstance(value, str) and key.endswith("_key") and "/" in value:
            paths.add(f"{key} nested")
        elif key in ("gripper_rule", "rotation_kind"):
            paths.add(f"{key} {value}")
        elif value != defaults.get(key):
            paths.add(f"{key} moved")
    cameras = "+".join(camera for camera, key in spec.image_keys.items() if key)
    paths.add(f"cameras {cameras}")
    language = spec.language_key
    paths.add(
        "no language" if language is None
        else "language per episode" if language.startswith("observation/")
        else "language per step"
    )  # fmt: skip
    return paths


def test_the_rehearsal_mix_takes_every_conversion_path_of_the_magic_soup():
    soup = dict(MIXES["oxe_magic_soup"])
    subset = dict(MIXES["oxe_magic_soup_paths"])
    assert set(subset) < set(soup) and len(subset) <= len(soup) // 2 + 1
    assert all(subset[name] == soup[name] for name in subset)  # the soup's weights
    every = set().union(*(conversion_paths(name) for name in soup))
    covered = set().union(*(conversion_paths(name) for name in subset))
    assert every - covered == set()
    # The measure is not trivial: the soup has many paths, and leaving out the one dataset
    # that takes a path loses it.
    assert len(every) > 25
    for name in subset:
        others = set().union(*(conversion_paths(n) for n in subset if n != name))
        assert conversion_paths(name) - others, f"{name} adds no path: drop it from the subset"
