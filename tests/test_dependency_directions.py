"""The package's imports run down the data flow (issue 14); read with `ast`, so lazy imports
inside functions count too.

    schema, normalization, storage, config      neutral: import nothing of the project layers
    data   -> (neutral)
    model  -> (neutral)
    training -> data, model
    envs, inference -> anything below

Within training/ and envs/ the rooms (sub-packages, issue 71) import only down their order:

    training:  optim, parallel, checkpoints, {config, run}, {finetuning, pods}, benchmarks
    envs:      the simulator, demonstrations and evaluation (envs/*.py), transfer/

and every module of training/ but config.py sits in a room.

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


# Each layer's rooms, lowest first; rooms in one tuple may import each other (config.py holds the
# typed config of the run's parts, and the run reads it). A module directly in the layer's folder
# belongs to the room named by its stem, or to "" (envs' simulator modules).
ROOM_ORDER = {
    "training": (("optim",), ("parallel",), ("checkpoints",), ("config", "run"),
                 ("finetuning", "pods"), ("benchmarks",)),
    "envs": (("",), ("transfer",)),
}  # fmt: skip


def room_of(module: str) -> tuple[str, str] | None:
    """(layer, room) of an ``octo_like.<layer>.<room>...`` module, for layers with rooms; None
    for a module in no listed room (a loose training module: the next test names it)."""
    parts = module.split(".")
    if len(parts) < 3 or parts[1] not in ROOM_ORDER:
        return None
    rooms = {r for level in ROOM_ORDER[parts[1]] for r in level}
    room = parts[2] if parts[2] in rooms else ""
    return (parts[1], room) if room in rooms else None


def room_level(layer: str, room: str) -> int:
    return next(i for i, level in enumerate(ROOM_ORDER[layer]) if room in level)


def rooms_importing_upwards(modules: dict[str, pathlib.Path]) -> list[str]:
    """``module imports target`` for each import of a higher room of the same layer."""
    offenders = []
    for name, path in modules.items():
        home = room_of(name)
        if home is None:
            continue
        for target in sorted(project_imports(path)):
            there = room_of(target)
            if there and there[0] == home[0] and room_level(*there) > room_level(*home):
                offenders.append(f"{name} imports {target}")
    return offenders


def test_rooms_import_only_down_their_order():
    offenders = rooms_importing_upwards(MODULES)
    assert offenders == [], "\n".join(offenders)


def test_every_training_module_sits_in_a_room():
    """training/ once held 32 modules side by side; a new one goes into the room of its purpose."""
    loose = [
        p.name for p in (PACKAGE / "training").glob("*.py") if p.stem not in ("__init__", "config")
    ]
    assert loose == []
    for room in (r for level in ROOM_ORDER["training"] for r in level if r != "config"):
        docstring = ast.get_docstring(
            ast.parse((PACKAGE / "training" / room / "__init__.py").read_text())
        )
        assert docstring, f"training/{room}/__init__.py says what the room is for"


def test_the_room_rule_catches_an_import_back_up(tmp_path):
    """The optimizer reaching for fine-tuning (lazily), and the simulator for the transfer
    benchmark, beside imports down the order and within one level."""
    probes = {
        "octo_like.training.optim.masks": (
            "def f():\n    from octo_like.training.finetuning import finetune\n"
        ),
        "octo_like.training.run.loop": "from octo_like.training.checkpoints import checkpoint\n",
        "octo_like.training.config": "from octo_like.training.run import profiling\n",
        "octo_like.envs.evaluation": "from octo_like.envs.transfer.plan import Arm\n",
        "octo_like.envs.transfer.plan": "from octo_like.envs import tasks\n",
    }
    modules = {}
    for name, source in probes.items():
        modules[name] = tmp_path / f"{name}.py"
        modules[name].write_text(source)
    assert rooms_importing_upwards(modules) == [
        "octo_like.training.optim.masks imports octo_like.training.finetuning",
        "octo_like.training.optim.masks imports octo_like.training.finetuning.finetune",
        "octo_like.envs.evaluation imports octo_like.envs.transfer.plan",
        "octo_like.envs.evaluation imports octo_like.envs.transfer.plan.Arm",
    ]


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
