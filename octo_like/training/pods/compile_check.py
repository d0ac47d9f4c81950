"""Compile a run's exact train step for a TPU topology from any machine, before booking it.

libtpu's compile-only devices (`jax.experimental.topologies`) describe a real slice (chips,
coordinates, hosts, slices) without the hardware: XLA's TPU compiler partitions and compiles
the program for them on a CPU host. Nothing is materialized: the model comes from
`nnx.eval_shape`, the state from `jax.eval_shape`, the batch from the config
(`abstract_inputs.py`); the program is `train_program.build_program`'s, the one the training
loop runs. What it reports (per chip): XLA's memory analysis against the chip's HBM, XLA's FLOPs
beside the analytic count (`model/flops.py`), the collectives by kind, dtype and bytes, and
the step time the FLOPs would take at the chip's peak.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from octo_like.model import flops as flop_count
from octo_like.model.attention import resolve_implementation
from octo_like.model.config import ModelConfig
from octo_like.model.input_spec import spec_from_batch
from octo_like.model.language import T5EncoderConfig, TextTokenizer
from octo_like.model.octo_module import OctoModule
from octo_like.model.transformer import TRANSFORMER_PRESETS
from octo_like.training.config import TrainConfig
from octo_like.training.parallel import sharding
from octo_like.training.pods import hlo_collectives
from octo_like.training.run.abstract_inputs import abstract_batch, with_sharding
from octo_like.training.run.train_program import build_program

GIB = 1 << 30
# HBM per chip (bytes) by `device_kind`, from Google's Cloud TPU system pages (v5p: 95 GB).
HBM_BYTES = (
    ("TPU v4", 32 * GIB),
    ("TPU v5 lite", 16 * GIB),  # v5e
    ("TPU v5", 95 * 10**9),  # v5p
    ("TPU v6 lite", 32 * GIB),  # v6e (Trillium)
)
# Chips with two TensorCores that JAX drives as one device ("megacore").
MEGACORE_GENERATIONS = ("v4", "v5p")
# The published T5-base encoder (Octo's frozen language model), used for its shapes when the
# configured checkpoint directory is not readable here (e.g. a gs:// path on another project).
T5_BASE_ENCODER = T5EncoderConfig(
    vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12
)
SMALL_ENCODER_VOCAB = 256  # an embedded tokenizer's size, when its directory is not here yet


def topology_devices(
    topology: str, *, num_slices: int = 1, chip_config_name: str | None = None
) -> list:
    """The compile-only devices of a TPU topology named as libtpu names it (``v4:4x4x4``,
    ``v5e:16x16``, ``v5p:4x4x4``, ``v6e:16x16``); megacore chips (v4, v5p) as one device each."""
    from jax.experimental import topologies

    generation = topology.split(":", 1)[0]
    if chip_config_name is None:
        chip_config_name = "megacore" if generation in MEGACORE_GENERATIONS else "default"
    try:
        description = topologies.get_topology_desc(
            topology, platform="tpu", chip_config_name=chip_config_name, num_slices=num_slices
        )
    except Exception as error:  # libtpu's own message, with what we tried
        raise ValueError(
            f"libtpu does not know topology {topology!r} (num_slices={num_slices}, "
            f"chip_config_name={chip_config_name!r}): {error}. Names look like v4:4x4x4, "
            "v5e:16x16, v5p:4x4x4, v6e:16x16 (chips per axis)"
        ) from error
    return list(description.devices)


def hbm_bytes(device_kind: str) -> int | None:
    for name, size in HBM_BYTES:
        if device_kind.lower().startswith(name.lower()):
            return size
    return None


def resolve_for_target(model: ModelConfig, platform: str, tokens: int) -> dict[str, str]:
    """What the config's 'auto' choices become on `platform` (for a sequence of `tokens`)."""
    dtype = model.compute_dtype(platform)
    preset = TRANSFORMER_PRESETS[model.transformer]
    attention = resolve_implementation(
        model.attention,
        platform=platform,
        dtype=dtype,
        head_dim=preset.width // preset.num_heads,
        seq_len=tokens,
    )
    return {
        "dtype": f"{model.dtype} -> {dtype}" if model.dtype == "auto" else dtype,
        "attention": f"{model.attention} -> {attention}"
        if model.attention == "auto"
        else attention,
    }


def _language_setup(model: ModelConfig, scratch: str) -> tuple[ModelConfig, int, str]:
    """(model config whose language files are readable here, vocabulary size, note)."""
    language = model.language
    if language.encoder == "none":
        return model, 0, ""
    directory = language.checkpoint_dir
    if language.encoder == "t5":
        try:
            config = T5EncoderConfig.from_json(f"{directory}/config.json")
            return model, config.vocab_size, f"T5 shapes from {directory}/config.json"
        except Exception:  # not readable from this machine: Octo's T5-base
            with open(os.path.join(scratch, "config.json"), "w") as file:
                json.dump({"model_type": "t5", **dataclasses.asdict(T5_BASE_ENCODER)}, file)
            language = dataclasses.replace(language, checkpoint_dir=scratch)
            note = f"{directory or '(no checkpoint_dir)'} not readable here: T5-base shapes"
            return dataclasses.replace(model, language=language), T5_BASE_ENCODER.vocab_size, note
    try:
        vocab = TextTokenizer.from_directory(directory, language.max_length).vocab_size
        return model, vocab, f"tokenizer of {directory}"
    except Exception:
        note = f"no tokenizer at {directory!r} yet: a {SMALL_ENCODER_VOCAB}-piece vocabulary"
        return model, SMALL_ENCODER_VOCAB, note


@dataclasses.dataclass
class CompileReport:
    """Per-chip figures of one compiled train step (bytes, FLOPs, seconds)."""

    topology: str
    num_slices: int
    device_kind: str
    chips: int
    hosts: int
    mesh: dict[str, int]
    batch_size: int
    resolved: dict[str, str]
    notes: list[str]
    memory: dict[str, int]
    hbm_bytes: int | None
    xla_flops: float
    analytic_flops: float
    collectives: dict[str, dict[str, float]]
    gradient_reductions: dict[str, int]  # dtype -> parameter gradients summed across devices
    ideal_step_s: float | None
    compile_s: float
    suggestions: list[str]

    @property
    def fits(self) -> bool | None:
        return None if self.hbm_bytes is None else self.memory["total"] <= self.hbm_bytes

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fits": self.fits}


def compile_train_step(
    config: TrainConfig,
    topology: str,
    *,
    num_slices: int = 1,
    chip_config_name: str | None = None,
    proprio_dim: int | None = None,
) -> CompileReport:
    """Compiles `config`'s train step for `topology` and measures it (see the module doc)."""
    devices = topology_devices(topology, num_slices=num_slices, chip_config_name=chip_config_name)
    mesh = sharding.make_mesh(config.mesh, devices)
    batch = abstract_batch(config, proprio_dim=proprio_dim)
    with tempfile.TemporaryDirectory() as scratch:
        model_config, vocab, language_note = _language_setup(config.model, scratch)
        config = dataclasses.replace(config, model=model_config)
        spec = spec_from_batch(batch)
        module = nnx.eval_shape(
            lambda: OctoModule(model_config, spec, vocab, rngs=nnx.Rngs(0), platform="tpu")
        )
        counted = flop_count.model_train_flops(module, spec)
        analytic, tokens = counted.total(config.data.batch_size), counted.tokens
        program = build_program(config, module, mesh, jax.random.key(config.seed), abstract=True)
        start = time.perf_counter()
        inputs = (program.state, with_sharding(batch, program.batch_sharding))
        notes = [note for note in (language_note,) if note]
        try:
            compiled = program.train_step.lower(*inputs).compile()
            memory = _memory(compiled.memory_analysis())
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, Sequence) else cost
            found = hlo_collectives.collectives(compiled.as_text())
        except jax.errors.JaxRuntimeError as error:  # XLA refuses what cannot fit in HBM
            refusal = out_of_memory(str(error))
            if refusal is None:
                raise
            temporaries, usable = refusal
            arguments = per_chip_bytes(inputs)
            memory = dict(arguments=arguments, outputs=0, aliased=0, temporaries=temporaries,
                          code=0, total=arguments + temporaries)  # fmt: skip
            cost, found = {}, []
            notes.append(
                f"the TPU compiler stopped: {temporaries / GIB:.2f} GiB of temporaries exceed the "
                f"{usable / GIB:.2f} GiB of HBM it may use (outputs, code, FLOPs and "
                "collectives unknown)"
            )
        compile_s = time.perf_counter() - start
    chips = len(devices)
    kind = devices[0].device_kind
    peak = flop_count.peak_flops(kind)
    analytic_per_chip = analytic / chips
    report = CompileReport(
        topology=topology,
        num_slices=num_slices,
        device_kind=kind,
        chips=chips,
        hosts=len({d.process_index for d in devices}),
        mesh=dict(mesh.shape),
        batch_size=config.data.batch_size,
        resolved=resolve_for_target(model_config, "tpu", tokens),
        notes=notes,
        memory=memory,
        hbm_bytes=hbm_bytes(kind),
        xla_flops=float(cost.get("flops", 0.0)),
        analytic_flops=analytic_per_chip,
        collectives=hlo_collectives.summarize(found),
        gradient_reductions=parameter_gradient_reductions(found, program.state.params),
        ideal_step_s=None if peak is None else analytic_per_chip / peak[1],
        compile_s=compile_s,
        suggestions=[],
    )
    if report.fits is False:
        report.suggestions = suggestions(config, report)
    return report


_OUT_OF_MEMORY = re.compile(
    r"memory required for HLO temporaries \((?P<need>[\d.]+)G\) exceeds available HBM "
    r"\((?P<have>[\d.]+)G\)"
)


def out_of_memory(message: str) -> tuple[int, int] | None:
    """(temporaries, usable HBM) in bytes from the TPU compiler's out-of-memory refusal."""
    match = _OUT_OF_MEMORY.search(message)
    if match is None:
        return None
    return int(float(match["need"]) * GIB), int(float(match["have"]) * GIB)


def per_chip_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of sharded `jax.ShapeDtypeStruct`s."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape)
        total += math.prod(shape) * jax.numpy.dtype(leaf.dtype).itemsize
    return total


def parameter_gradient_reductions(found, params) -> dict[str, int]:
    """dtype -> count of backward-pass reductions whose array has a parameter's shape (whole or
    one shard): the gradients summed across replicas and FSDP shards. (Backward reductions of
    activations, e.g. a product contracting a sharded feature axis, are not gradients.)"""
    shapes = set()
    for leaf in jax.tree.leaves(params):
        shapes.add(tuple(leaf.shape))
        if getattr(leaf, "sharding", None) is not None:
            shapes.add(tuple(leaf.sharding.shard_shape(leaf.shape)))
    counts = collections.Counter(
        c.dtype for c in found if c.is_gradient_reduction and c.shape in shapes
    )
    return dict(counts)


def _memory(stats) -> dict[str, int]:
    """Bytes per chip; total = arguments + outputs - donated aliases + temporaries + code."""
    memory = {
        "arguments": int(stats.argument_size_in_bytes),
        "outputs": int(stats.output_size_in_bytes),
        "aliased": int(stats.alias_size_in_bytes),
        "temporaries": int(stats.temp_size_in_bytes),
        "code": int(stats.generated_code_size_in_bytes),
    }
    memory["total"] = (
        memory["arguments"]
        + memory["outputs"]
        - memory["aliased"]
        + memory["temporaries"]
        + memory["code"]
    )
    return memory


def suggestions(config: TrainConfig, report: CompileReport) -> list[str]:
    """What would make a program that does not fit fit, the largest estimated saving first."""
    hbm = report.hbm_bytes or 0
    over = report.memory["total"] - hbm
    arguments = report.memory["arguments"]  # weights, optimizer moments, the batch
    found = []  # (estimated bytes saved, advice)
    devices_per_slice = report.chips // max(report.num_slices, 1)
    if config.mesh.fsdp == 1 and devices_per_slice >= 2:
        fsdp = next(n for n in (8, 4, 2) if devices_per_slice % n == 0)
        saved = arguments * (1 - 1 / fsdp)
        if saved >= 0.1 * over:
            advice = (
                f"--config.mesh.fsdp={fsdp}: shards the {arguments / GIB:.1f} GiB of weights "
                "and optimizer moments over fsdp devices"
            )
            found.append((saved, advice))
    if config.model.remat == "none":
        found.append((report.memory["temporaries"] / 2, (
            "--config.model.remat=dots_saveable (or full): keeps fewer activations for the "
            f"backward pass ({report.memory['temporaries'] / GIB:.1f} GiB of temporaries now)"
        )))  # fmt: skip
    per_chip = config.data.batch_size // report.chips
    if per_chip >= 2:
        # Temporaries scale with the examples per chip; the state does not.
        room = max(hbm - arguments, 0) / max(report.memory["temporaries"], 1)
        fitting = max(1, 2 ** math.floor(math.log2(max(per_chip * room, 1))))
        fitting = min(fitting, per_chip // 2)
        found.append((over, (
            f"--config.data.batch_size={fitting * report.chips} (or fewer): {fitting} examples "
            f"per chip instead of {per_chip}"
        )))  # fmt: skip
    return [advice for _, advice in sorted(found, key=lambda f: -f[0])]


def format_report(report: CompileReport) -> str:
    """The human-readable part of the check's output."""
    gib = lambda n: f"{n / GIB:.2f} GiB"
    hbm = "unknown" if report.hbm_bytes is None else gib(report.hbm_bytes)
    memory = report.memory
    verdict = {True: "FITS", False: "DOES NOT FIT", None: "unknown HBM"}[report.fits]
    agreement = report.xla_flops / report.analytic_flops - 1 if report.analytic_flops else 0.0
    lines = [
        f"topology {report.topology} x {report.num_slices} slice(s): {report.chips} x "
        f"{report.device_kind} on {report.hosts} host(s); mesh {report.mesh}; global batch "
        f"{report.batch_size}",
        "auto settings for the target: "
        + ", ".join(f"{k} {v}" for k, v in report.resolved.items()),
        *(f"note: {note}" for note in report.notes),
        f"memory per chip: arguments {gib(memory['arguments'])}, outputs "
        f"{gib(memory['outputs'])} (donated {gib(memory['aliased'])}), temporaries "
        f"{gib(memory['temporaries'])}, code {gib(memory['code'])}; total "
        f"{gib(memory['total'])} of {hbm} HBM: {verdict}",
        f"FLOPs per chip: XLA {report.xla_flops:.4g}, analytic {report.analytic_flops:.4g} "
        f"({agreement:+.1%})"
        if report.xla_flops
        else f"FLOPs per chip: analytic {report.analytic_flops:.4g} (XLA's unknown)",
    ]
    for kind, entry in sorted(report.collectives.items()):
        dtypes = ", ".join(f"{d} x{n}" for d, n in sorted(entry["by_dtype"].items()))
        lines.append(
            f"collective {kind}: {entry['count']} ({dtypes}), {entry['bytes'] / 2**20:.1f} MiB"
        )
    if report.gradient_reductions:
        dtypes = ", ".join(f"{d} x{n}" for d, n in sorted(report.gradient_reductions.items()))
        lines.append(f"gradient reductions across devices: {dtypes}")
    if report.ideal_step_s is not None:
        lines.append(f"ideal step time at the chip's peak: {report.ideal_step_s * 1e3:.3g} ms")
    lines.append(f"compiler ran {report.compile_s:.1f} s")
    if report.suggestions:
        lines.append("to make it fit, try:")
        lines += [f"  {s}" for s in report.suggestions]
    return "\n".join(lines)
