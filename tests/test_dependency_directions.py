"""The package's imports run down the data flow (issue 14); read with `ast`, so lazy imports
inside functions count too.

    schema, normalization, storage, config      neutral: import nothing of the project layers
    data   -> (neutral)
    model  -> (neutral)
    training -> data, model
    envs, inference -> anything below

Entry points (train.py, finetune.py, scripts/) sit on top and may import the package and the
tests' helpers (the failure drill, the soak), but never one another across scripts/: a script is
thin and its logic lives where tests import it. Nothing under octo_like/ imports what sits on top
of it (the tests, scripts/, the entry points): what the product ships does not need a checkout.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "octo_like"
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


def top_level_imports(path: pathlib.Path) -> set[str]:
    """The first component of every absolute import in `path`, at any depth of its code
    (``from tests.drill import runner`` -> ``tests``); relative imports count as ``.``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." if node.level else (node.module or "").split(".")[0])
    return found


def script_modules(scripts: pathlib.Path) -> set[str]:
    """What one script could import of another: each scripts/<name>.py and each folder."""
    folders = {p.name for p in scripts.iterdir() if p.is_dir() and p.name != "__pycache__"}
    return {p.stem for p in scripts.glob("*.py")} | folders


def scripts_importing_scripts(scripts: pathlib.Path) -> list[str]:
    """``script imports name`` for each import, by any script (or any file of a folder under
    scripts/), of another script, of a folder under scripts/, or relative to scripts/."""
    names = script_modules(scripts)
    return [
        f"{path.relative_to(scripts.parent)} imports {name}"
        for path in sorted(scripts.rglob("*.py"))
        for name in sorted(top_level_imports(path))
        if name in names or name in (".", "scripts")
    ]


def test_scripts_never_import_scripts():
    """A script is thin: flags and a call into octo_like/ (or tests/, for the drill and the
    soak). The failure drill's case library once lived in scripts/drill_cases/, imported by
    scripts/failure_drill.py, where no test could import it without a path hack."""
    offenders = scripts_importing_scripts(REPO / "scripts")
    assert offenders == [], "\n".join(offenders)


def package_imports_above(repo: pathlib.Path) -> list[str]:
    """``module imports name`` for each import, by a module of `repo`/octo_like, of the tests,
    of scripts/ (as a package or a script on the path) or of an entry point at the root."""
    above = {"tests", "scripts", *script_modules(repo / "scripts")}
    above |= {p.stem for p in repo.glob("*.py")}  # train.py, finetune.py, setup.py
    return [
        f"{path.relative_to(repo)} imports {name}"
        for path in sorted((repo / "octo_like").rglob("*.py"))
        for name in sorted(top_level_imports(path) & above)
    ]


def test_the_package_imports_nothing_above_it():
    """octo_like/ never imports the tests (the soak's abusive clients, test code, now live in
    tests/inference/), scripts/ or the entry points: an installed package has none of them."""
    offenders = package_imports_above(REPO)
    assert offenders == [], "\n".join(offenders)


def test_the_script_rule_catches_the_drill_s_old_layout(tmp_path):
    """The checker on a copy of the old layout: a script importing a case package beside it
    (lazily too), and a case module importing its sibling through that package."""
    scripts = tmp_path / "scripts"
    (scripts / "drill_cases").mkdir(parents=True)
    (scripts / "failure_drill.py").write_text("import argparse\nfrom drill_cases import CASES\n")
    (scripts / "drill_cases" / "entries.py").write_text(
        "def served():\n    from drill_cases.server import _served\n"
    )
    (scripts / "serve_policy.py").write_text("from octo_like.inference import Policy\n")
    (scripts / "evaluate.py").write_text("from tests.drill import runner\n")  # not a script
    assert scripts_importing_scripts(scripts) == [
        "scripts/drill_cases/entries.py imports drill_cases",
        "scripts/failure_drill.py imports drill_cases",
    ]


def test_the_package_rule_catches_an_import_of_the_tests(tmp_path):
    """A product module that reached for the test clients (lazily), and one that loaded a
    script put on the path, beside modules that import only the package and libraries."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "serve_policy.py").write_text("")
    (tmp_path / "train.py").write_text("")
    inference = tmp_path / "octo_like" / "inference"
    inference.mkdir(parents=True)
    (inference / "server.py").write_text("import numpy\nfrom octo_like.inference import wire\n")
    (inference / "wire.py").write_text("from . import server\n")
    (inference / "soak.py").write_text(
        "def clients():\n    from tests.inference import abusive_clients\n"
    )
    (inference / "serving.py").write_text("import serve_policy\nimport train\n")
    assert package_imports_above(tmp_path) == [
        "octo_like/inference/serving.py imports serve_policy",
        "octo_like/inference/serving.py imports train",
        "octo_like/inference/soak.py imports tests",
    ]
