"""Where a step's device time goes: a per-category and per-kernel table from a profiler trace.

TensorBoard's profile tab answers this interactively; this reads the same ``*.xplane.pb`` file
with `jax.profiler.ProfileData`, so a benchmark or a headless GPU host can print it. Every device
event that XLA attributes to an HLO op (the ``hlo_op`` stat: GPU kernels on the stream lines, CPU
thunks on the host lines) is summed by kernel name (on GPU one HLO op, e.g. a CUDA-graph
``command_buffer``, launches many different kernels) and sorted into a category by that name:

- ``attention``: fused attention (cuDNN SDPA / flash kernels and their cuDNN helper fusions)
- ``matmul``: GEMMs (cuBLAS, cuBLASLt ``nvjet``/``xmma`` kernels, Triton GEMM fusions, dots)
- ``convolution``: cuDNN convolutions (forward, data and weight gradients)
- ``collective``: all-reduce / all-gather / reduce-scatter and other NCCL kernels
- ``copy``: copies, transposes, memsets
- ``elementwise``: every other fusion (norms, activations, reductions, the optimizer)

Times are milliseconds per step (the trace's total divided by the number of steps it holds).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import re

CATEGORIES = ("matmul", "attention", "convolution", "elementwise", "copy", "collective")

# Lines of a device plane that repeat the kernels' time under another grouping.
_DERIVED_LINES = frozenset(
    {
        "XLA Modules",
        "XLA Ops",
        "XLA TraceMe",
        "Steps",
        "Framework Ops",
        "Framework Name Scope",
        "Source code",
        "Launch Stats",
    }
)


_CONVOLUTION = re.compile(r"conv(?!ert)|fprop|dgrad|wgrad|implicit")


def classify(kernel_name: str) -> str:
    """The category of one kernel (GPU: 'nvjet_tst_...', 'loop_add_fusion'; CPU: the op)."""
    name = kernel_name.lower()
    if any(k in name for k in ("sdpa", "fmha", "flash", "attention", "cudnn::fusion")):
        return "attention"
    if any(
        k in name
        for k in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective", "nccl")
    ):
        return "collective"
    if _CONVOLUTION.search(name):
        return "convolution"
    # XLA:CPU hands dots and convolutions (with their fused neighbours) to YNNPACK as
    # "ynn_fusion.N" kernels; the trace does not say which, so they count as matrix products.
    if any(
        k in name
        for k in ("gemm", "nvjet", "xmma", "cutlass", "cublas", "dot", "matmul", "ynn_fusion")
    ):
        return "matmul"
    if any(k in name for k in ("copy", "transpose", "memset", "memcpy")):
        return "copy"
    return "elementwise"


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One kernel's device time: milliseconds per step, launches per step, its category, and
    the HLO op that (first) launched it."""

    kernel: str
    op: str
    category: str
    ms_per_step: float
    calls_per_step: float


def latest_trace(trace_dir: str) -> str:
    """The newest ``*.xplane.pb`` under `trace_dir` (a profiler log directory)."""
    files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb trace under {trace_dir}")
    return max(files, key=os.path.getmtime)


def device_ops(trace_file: str, steps: int) -> list[OpTime]:
    """Per-kernel device time of a trace holding `steps` steps, largest first.

    Device planes (``/device:...``) are read where the trace has them (GPU, TPU); a CPU-only
    trace has its XLA thunks on the host plane.
    """
    from jax.profiler import ProfileData

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    data = ProfileData.from_file(trace_file)
    planes = list(data.planes)
    device_planes = [p for p in planes if p.name.startswith("/device:")]
    total = collections.defaultdict(float)
    calls = collections.Counter()
    op_of: dict[str, str] = {}
    for plane in device_planes or planes:
        for line in plane.lines:
            if line.name in _DERIVED_LINES:
                continue
            for event in line.events:
                op = dict(event.stats).get("hlo_op")
                if op is None:
                    continue
                total[event.name] += event.duration_ns
                calls[event.name] += 1
                op_of.setdefault(event.name, str(op))
    ops = [
        OpTime(
            kernel=kernel,
            op=op_of[kernel],
            category=classify(kernel),
            ms_per_step=ns / 1e6 / steps,
            calls_per_step=calls[kernel] / steps,
        )
        for kernel, ns in total.items()
    ]
    return sorted(ops, key=lambda o: -o.ms_per_step)


def by_category(ops: list[OpTime]) -> dict[str, float]:
    """Milliseconds per step in each of `CATEGORIES` (zero where none ran) plus ``total``."""
    times = dict.fromkeys(CATEGORIES, 0.0)
    for op in ops:
        times[op.category] += op.ms_per_step
    times["total"] = sum(op.ms_per_step for op in ops)
    return times


def format_summary(ops: list[OpTime], top: int = 20) -> str:
    """A printable table: categories, then the `top` ops by time."""
    categories = by_category(ops)
    total = categories["total"] or 1.0
    lines = ["device time per step by category:"]
    for name in (*CATEGORIES, "total"):
        ms = categories[name]
        lines.append(f"  {name:12s} {ms:9.2f} ms  {100 * ms / total:5.1f}%")
    lines.append(f"top {min(top, len(ops))} kernels (ms/step, calls/step, category, kernel):")
    for op in ops[:top]:
        lines.append(
            f"  {op.ms_per_step:8.3f} {op.calls_per_step:6.1f}  {op.category:11s} {op.kernel[:90]}"
        )
    return "\n".join(lines)
