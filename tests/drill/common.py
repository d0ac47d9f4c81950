"""The drill's case registry, the per-case context and the helpers that classify an outcome."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import traceback
from collections.abc import Callable

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED_BRIDGE = REPO.parent / "shared" / "data" / "bridge_dataset" / "1.0.0"
OUTCOMES = ("named", "skipped", "none-needed", "raw", "silent", "crash", "data-loss")
GOOD = ("named", "skipped", "none-needed")
RESULT_TAG = "DRILL-RESULT "  # marks the child's one result line on its stdout


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    category: str
    good: str  # the outcome that counts as handled (documented error, skip, or none needed)
    run: Callable[[Context], tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Context:
    root: pathlib.Path  # shared fixtures (checkpoint, tokenizer), built once by setup
    tmp: pathlib.Path  # this case's own scratch directory

    @property
    def checkpoint(self) -> pathlib.Path:
        return self.root / "checkpoints"

    @property
    def language(self) -> pathlib.Path:
        return self.root / "t5"


CASES: dict[str, Case] = {}


def case(case_id: str, category: str, good: str = "named"):
    def register(fn):
        assert case_id not in CASES, case_id
        CASES[case_id] = Case(case_id, category, good, fn)
        return fn

    return register


def one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def raised_by_project(error: BaseException) -> bool:
    """The exception's class is octo_like's, or its raise statement is in octo_like/."""
    if type(error).__module__.startswith("octo_like"):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and "/octo_like/" in frames[-1].filename


def classify_error(error: BaseException, names: str) -> tuple[str, str]:
    """named: raised by the project and its message matches `names` (the field/file/...);
    raw: anything else (a library exception, or the project's without the naming)."""
    text = f"{type(error).__name__}: {error}"
    if raised_by_project(error) and re.search(names, str(error), re.S):
        return "named", one_line(text)
    return "raw", one_line(text)


def expect_error(fn: Callable[[], object], names: str, *, silent_if: str = "no error") -> tuple:
    """Runs `fn`, which should raise the project's error naming `names` (a regex)."""
    try:
        result = fn()
    except SystemExit as exit_:
        code = exit_.code
        return ("named", f"exit {code}") if code not in (0, None) else ("silent", "exit 0")
    except Exception as error:  # noqa: BLE001 - classifying is the point
        return classify_error(error, names)
    return "silent", one_line(f"{silent_if}; returned {result!r}")
