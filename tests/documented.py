"""Commands printed in the project's documents, for the tests that run or parse them
(test_documented_commands.py: train.py / finetune.py; test_documented_scripts.py: scripts/)."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterable

REPO = pathlib.Path(__file__).resolve().parents[1]
# The pages a user reads: the README, every page under docs/ and the data conversion guide.
DOCUMENTS = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
DATA_GUIDE = "data/README.md"


def documented_commands(sources: Iterable[str], pattern: str) -> list[tuple[str, re.Match, str]]:
    """(``file:line``, match, text) for each line of `sources` where `pattern` matches.

    `text` runs from the match's end to the end of the command: an inline command stops at its
    closing backtick, ``\\``-continued lines are joined and a trailing `` # comment`` is dropped.
    """
    found = []
    for source in sources:
        lines = (REPO / source).read_text().splitlines()
        i = 0
        while i < len(lines):
            match = re.search(pattern, lines[i])
            if not match:
                i += 1
                continue
            start, text = i + 1, lines[i][match.end() :].split("`")[0]
            while text.rstrip().endswith("\\"):
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i].strip()
            found.append((f"{source}:{start}", match, re.split(r"\s#\s", text)[0]))
            i += 1
    return found


def fenced_block(source: str, first_line: str) -> str:
    """The fenced code block of `source` whose first line is `first_line` (without the fences)."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", (REPO / source).read_text(), re.M | re.S)
    matching = [block for block in blocks if block.splitlines()[0].strip() == first_line]
    assert len(matching) == 1, f"{source}: {len(matching)} blocks start with {first_line!r}"
    return matching[0]
