"""A run's model at start-up: initialized, its train program built, its step compiling.
What it starts from is an `InitialModel`: a fresh `OctoModel.from_config`, or what a
`ModelInitializer` hook returns (fine-tuning: a partly pretrained model).

The step is compiled in a thread (XLA releases the GIL). When the batch is foreseen as shapes
(`run_data.foreseen_batch`) and the model is a fresh one, the compile starts before the weights
exist: from the module's shapes alone (`OctoModel.abstract_module`), so it runs beside the
initializers' program and the language encoder's loading instead of after them (the step's
compile is the longest XLA compile of a start-up: ~14 s for `base` on a 2-core CPU). That
program is the one the concrete state would have been compiled to, since the step reads no
module state but the weights: a module holding other arrays (e.g. batch statistics, which the
step closes over as values) compiles after its initialization, as before.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx

from octo_like.model.base_checkpoint import BaseReference
from octo_like.model.octo_model import OctoModel
from octo_like.training.config import TrainConfig
from octo_like.training.run import run_data
from octo_like.training.run.abstract_inputs import with_sharding
from octo_like.training.run.train_program import TrainProgram, build_program

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class InitialModel:
    """What `loop.run` starts training from. The default is a fresh `OctoModel.from_config`; an
    `init_model` hook (fine-tuning) returns a partly pretrained model with its own extras.

    frozen: regexes frozen on top of the optimizer config's (e.g. the reused weights in a
      head-only or LoRA fine-tuning).
    base_params: parameters that checkpoints read from a base checkpoint instead of storing
      them (they must stay frozen); None saves every parameter.
    """

    model: OctoModel
    frozen: tuple[str, ...] = ()
    base_params: BaseReference | None = None


# (example batch: the global batch foreseen as `jax.ShapeDtypeStruct`s, `run_data.foreseen_batch`,
# or this process's zeros shaped like the training batches, `Pipeline.example_batch`; init rng;
# dataset statistics entries; mesh) -> the initial model.
ModelInitializer = Callable[
    [Mapping[str, Any], jax.Array, dict[str, dict], jax.sharding.Mesh], InitialModel
]


@dataclasses.dataclass
class StartedModel:
    """initial: the model `make_initial` returned; program: its train program (concrete state);
    compiled_for: the global batch spec the step compiles for; compiled: a future of
    (the compiled step, seconds its compile took); early: whether that compile started from
    the module's shapes, before the weights were initialized."""

    initial: InitialModel
    program: TrainProgram
    compiled_for: dict
    compiled: concurrent.futures.Future
    early: bool


@dataclasses.dataclass
class EarlyStep:
    """A fresh model's step compiling from shapes (`compile_from_shapes`) for `example` (the
    global batch as `jax.ShapeDtypeStruct`s); compiled: as `StartedModel.compiled`."""

    example: dict
    compiled: concurrent.futures.Future


def start_model(
    config: TrainConfig,
    example: Mapping[str, Any],
    mesh: jax.sharding.Mesh,
    make_initial: Callable[[Mapping[str, Any]], InitialModel],
    step_rng: jax.Array,
    *,
    fresh: bool,
    early: EarlyStep | None = None,
) -> StartedModel:
    """`make_initial(example)` (an `InitialModel`), its program, and its step compiling for
    `example` (arrays or `jax.ShapeDtypeStruct`s, the global batch). `fresh`: the model is
    `OctoModel.from_config`'s (no fine-tuning hook), whose shapes the config decides. `early`:
    that step's compile, already started (e.g. while the statistics were computed); used when
    it is for `example`, else another starts."""
    if early is not None and not (fresh and _same_batch(early.example, example)):
        early = None  # another batch's (or a fine-tuning hook's model): compiled anew
    if early is None and fresh and run_data.is_abstract(example):
        early = compile_from_shapes(config, example, mesh, step_rng)
    initial = make_initial(example)
    program = build_program(
        config, initial.model.module, mesh, step_rng, extra_frozen=initial.frozen
    )
    spec = run_data.device_spec(example, initial.model, config.data.batch_size)
    if early is not None:
        return StartedModel(initial, program, spec, early.compiled, early=True)
    return StartedModel(initial, program, spec, _compile_step(program, spec), early=False)


def compile_from_shapes(
    config: TrainConfig, example: Mapping[str, Any], mesh: jax.sharding.Mesh, step_rng: jax.Array
) -> EarlyStep | None:
    """The step of the fresh model for `example` (`jax.ShapeDtypeStruct`s), compiling from
    shapes; None when the module holds arrays other than its weights (their values would be
    compiled into the step)."""
    module = OctoModel.abstract_module(config.model, example)
    _, _, rest = nnx.split(module, nnx.Param, ...)
    if jax.tree.leaves(rest):
        return None
    program = build_program(config, module, mesh, step_rng, abstract=True)
    return EarlyStep(dict(example), _compile_step(program, dict(example)))


class CompileWhileComputing:
    """`prepare_datasets`' ``while_computing``: a fresh model's step starts compiling for the
    batch the datasets' widths foretell while their statistics are computed (`start_model`
    checks it against the batch it is given). Best effort: an error is logged, and raised
    again where the step compiles without it."""

    def __init__(self, config: TrainConfig, mesh: jax.sharding.Mesh, step_rng: jax.Array):
        self._args = config, mesh, step_rng
        self.step: EarlyStep | None = None

    def __call__(self, action_widths: list, proprio_widths: list) -> None:
        config, mesh, step_rng = self._args
        try:
            foreseen = run_data.foreseen_batch(config, action_widths, proprio_widths)
            if foreseen is not None:
                self.step = compile_from_shapes(config, foreseen, mesh, step_rng)
        except Exception as error:  # noqa: BLE001
            log.warning("the step's early compile failed (%s); it compiles later", error)


def _same_batch(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two batch specs have the same keys, shapes and dtypes."""
    if not (run_data.is_abstract(a) and run_data.is_abstract(b)):
        return False
    if jax.tree.structure(dict(a)) != jax.tree.structure(dict(b)):
        return False
    pairs = zip(jax.tree.leaves(dict(a)), jax.tree.leaves(dict(b)), strict=True)
    return all(x.shape == y.shape and x.dtype == y.dtype for x, y in pairs)


def _compile_step(program: TrainProgram, spec: Mapping[str, Any]) -> concurrent.futures.Future:
    """A future of (`program`'s train step compiled for the global batch `spec`, its compile's
    seconds), compiling in a thread."""
    lowered = program.train_step.lower(program.state, with_sharding(spec, program.batch_sharding))

    def compile_timed():
        started = time.perf_counter()
        return lowered.compile(), time.perf_counter() - started

    compiling = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile-step")
    future = compiling.submit(compile_timed)
    compiling.shutdown(wait=False)
    return future
