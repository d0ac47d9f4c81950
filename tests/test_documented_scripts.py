"""Every ``python scripts/NAME.py ...`` command printed in the README, a page under docs/, the
data conversion guide (data/README.md), a script's docstring or a config is parsed by that
script's own `parse_args`, and every optional flag it shows in ``[--flag ...]`` is one the
script knows: a renamed flag cannot leave the documents behind.
(tests/test_documented_commands.py does the same, and more, for train.py and finetune.py.)"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex

import pytest

from tests.documented import DATA_GUIDE, DOCUMENTS, REPO, documented_commands

SOURCES = (
    *DOCUMENTS,
    DATA_GUIDE,
    "configs/pretrain.py",
    "configs/finetune.py",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "scripts").glob("*.py")),
)
# Shell substitutions in the documents, replaced by what they print.
SUBSTITUTIONS = {
    "$(python -c \"from octo_like.envs.tasks import TASKS; print(','.join(TASKS))\")": "reach,push"
}

ELIDED_TRAIN_FLAGS = ("--config", "configs/pretrain.py:base,oxe_magic_soup", "--workdir", "runs/b")


def documented_script_commands() -> list[tuple[str, str, str]]:
    """(where, script, argument text) with continuation lines joined and comments dropped."""
    found = []
    for where, match, text in documented_commands(SOURCES, r"python scripts/(\w+)\.py"):
        for shell, value in SUBSTITUTIONS.items():
            text = text.replace(shell, value)
        found.append((where, match.group(1), text))
    return found


COMMANDS = documented_script_commands()


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"documented_{name}", REPO / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ParserCaptured(Exception):
    pass


def parser_of(module) -> argparse.ArgumentParser:
    """The ArgumentParser `module.parse_args` builds (captured at its parse call)."""
    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        captured["parser"] = self
        raise ParserCaptured

    argparse.ArgumentParser.parse_args = capture
    try:
        module.parse_args([])
    except ParserCaptured:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured["parser"]


def split_optional(text: str) -> tuple[list[str], list[str]]:
    """(required tokens, flags shown in [...] groups); a group is documentation only."""
    optional = re.findall(r"\[(--[\w-]+)[^\]]*\]", text)
    required = re.sub(r"\[[^\]]*\]", " ", text)
    tokens = shlex.split(required)
    if tokens[-2:] == ["--", "..."]:  # elides train.py's flags (shown in full in another line)
        tokens = [*tokens[: tokens.index("--") + 1], *ELIDED_TRAIN_FLAGS]
    return [t for t in tokens if t != "..."], optional


def test_the_documents_hold_the_script_commands_we_expect():
    scripts = {script for _, script, _ in COMMANDS}
    on_disk = {p.stem for p in (REPO / "scripts").glob("*.py")}
    assert scripts == on_disk, f"scripts without a documented command: {on_disk - scripts}"


@pytest.mark.parametrize(("where", "script", "text"), COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_documented_script_command_parses(where, script, text):
    module = load_script(script)
    tokens, optional = split_optional(text)
    parser = parser_of(module)
    known = set(parser._option_string_actions)
    for action in parser._actions:  # a sub-command's own flags (launch.py tpu-vm|slurm|gke)
        if isinstance(action, argparse._SubParsersAction) and tokens[0] in action.choices:
            known |= set(action.choices[tokens[0]]._option_string_actions)
    unknown = [flag for flag in optional if flag not in known]
    assert not unknown, f"{where}: {script}.py has no {unknown}"
    args = module.parse_args(tokens)
    assert args is not None, where
