"""The collectives of a compiled XLA program, read from its optimized HLO text.

What crosses the interconnect decides whether a pod step is compute- or network-bound, and in
which precision gradients are summed across replicas; both are visible only after XLA's SPMD
partitioner ran, in ``compiled.as_text()``. Lines look like::

    %all-reduce.3 = bf16[512,512]{1,0:T(8,128)(2,1)} all-reduce(%fusion.5), channel_id=1, ...
    %ag = (f32[64]{0}, f32[512]{0}) all-gather-start(%p), ...
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.+?)\s+"
    r"(?P<kind>" + "|".join(KINDS) + r")(?P<start>-start)?\("
)
_ARRAY = re.compile(
    r"\b(?P<dtype>pred|bf16|f8\w*|f16|f32|f64|[su](?:4|8|16|32|64)|c64|c128)"
    r"\[(?P<dims>[\d,]*)\]"
)
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_BYTES = {"pred": 1, "bf16": 2, "f16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16,
          "s4": 1, "u4": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "s32": 4, "u32": 4,
          "s64": 8, "u64": 8}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Collective:
    """One array moved by one collective instruction (a tuple-shaped op gives several)."""

    kind: str  # one of KINDS
    dtype: str  # HLO element type: bf16, f32, ...
    shape: tuple[int, ...]
    source: str = ""  # the JAX operation it came from (HLO op_name metadata), "" if unknown

    @property
    def is_gradient_reduction(self) -> bool:
        """A sum across devices in the backward pass (the transpose of a forward op)."""
        return self.kind in ("all-reduce", "reduce-scatter") and "transpose(" in self.source

    @property
    def bytes(self) -> int:
        return math.prod(self.shape) * _BYTES.get(
            self.dtype, 1 if self.dtype.startswith("f8") else 4
        )


def _arrays(shape_text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (m["dtype"], tuple(int(d) for d in m["dims"].split(",") if d))
        for m in _ARRAY.finditer(shape_text)
    ]


def collectives(hlo_text: str) -> list[Collective]:
    """Every collective's result arrays, in program order (async ``-start``/``-done`` pairs
    counted once, at the start; their context scalars and echoed operands dropped)."""
    found = []
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        arrays = _arrays(match["shape"])
        if match["start"] and match["kind"] in ("all-gather", "collective-permute"):
            arrays = [a for a in arrays if a[1]]  # drop u32[] context scalars
            arrays = arrays[len(arrays) // 2 :]  # (operands..., results...)
        source = _OP_NAME.search(line)
        found += [
            Collective(match["kind"], dtype, shape, source[1] if source else "")
            for dtype, shape in arrays
        ]
    return found


def summarize(found: Iterable[Collective]) -> dict[str, dict]:
    """{kind: {"count": arrays, "bytes": total, "by_dtype": {dtype: arrays}}}."""
    summary: dict[str, dict] = {}
    for c in found:
        entry = summary.setdefault(c.kind, {"count": 0, "bytes": 0, "by_dtype": {}})
        entry["count"] += 1
        entry["bytes"] += c.bytes
        entry["by_dtype"][c.dtype] = entry["by_dtype"].get(c.dtype, 0) + 1
    return summary
