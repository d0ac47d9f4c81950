"""The package's imports run down the data flow (issue 14); read with `ast`, so lazy imports
inside functions count too.

    schema, normalization, storage, config      neutral: import nothing of the project layers
    data   -> (neutral)
    model  -> (neutral)
    training -> data, model
    envs, inference -> anything below

Entry points (train.py, finetune.py, scripts/) sit on top and may import anything.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "octo_like"
LAYERS = ("data", "model", "training", "envs", "inference")
NEUTRAL = ("schema", "normalization")

FORBIDDEN = {
    "data": {"model", "training", "envs", "inference"},
    "model": {"data", "training", "envs", "inference"},
    "training": {"envs", "inference"},
}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: pathlib.Path) -> set[str]:
    """Every ``octo_like...`` module `path` imports, at any depth of its code."""
    found = set()
    name = module_name(path) if PACKAGE in path.parents else path.stem
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("octo_like")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (path.name == "__init__.py")]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("octo_like"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer):
    offenders = [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if layer_of(name) == layer
        for target in sorted(project_imports(path))
        if layer_of(target) in FORBIDDEN[layer]
    ]
    assert offenders == [], "\n".join(offenders)


@pytest.mark.parametrize("neutral", NEUTRAL)
def test_shared_contracts_import_nothing_of_the_project(neutral):
    path = PACKAGE / f"{neutral}.py"
    assert project_imports(path) == set(), sorted(project_imports(path))


def test_no_import_cycles_within_the_model():
    """lora <-> octo_model <-> octo_module used to import each other (lazily, in a circle)."""
    model = {n: p for n, p in MODULES.items() if layer_of(n) == "model"}
    graph = {n: {t for t in project_imports(p) if t in model and t != n} for n, p in model.items()}

    def cycle_from(start):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in (cycle_from(n) for n in graph) if c]
    assert cycles == [], " -> ".join(cycles[0])


def test_the_checker_sees_lazy_imports(tmp_path):
    """A function-level import counts (the old loop -> envs arrow was one)."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from octo_like.envs.demos import all_instructions\n")
    assert "octo_like.envs.demos" in project_imports(source)
