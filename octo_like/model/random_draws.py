"""A program's random operations made together: the same values, less to compile.

XLA's CPU compiler emits a kernel per fusion, and a model's initializers emit several per
parameter: the key's fold-in and the draw (each a threefry hash, distinct per parameter: XLA
folds the parameter's counter into it) and the draw's transform. `draw_together(fn)` evaluates
`fn` with its random operations (`random_fold_in`, `random_split`, `random_bits`) batched: the
ones whose inputs are ready at the same point and whose signature (primitive, parameters, input
types) is the same run as one vmapped call, whose results stay stacked while only other random
operations read them (a batched fold-in's keys feed the batched draws in place). vmap preserves
values, so the outputs are bit-identical to `fn`'s (`tests/model/test_random_draws.py`;
`tests/model/test_initialize.py` on the model, sharded and not).

Measured by `scripts/benchmark_init.py` (`initialize`'s program, compile): on one H100, `base`
32-43 -> 19-21 s and `small` 34-37 -> 12-14 s; on a 2-core CPU at XLA's default optimization `base`
about even (compile 8.5 -> 7.6 s, lowering +0.6 s, and the run +0.5 s: each parameter is
copied out of its batch), at the tests' level 0 `small` 8.2 -> 4.2 s with lowering.
Memory, measured once with a scratch script (XLA's `memory_analysis` of the compiled program),
not by a test: under FSDP over 8 CPU devices `small`'s initializers took 55 MB of temporary
memory per device instead of 38 (a stacked draw carries no sharding constraint of its own and
is split only as far as XLA's propagation from the parameters' constraints takes it); neither
held the whole model (~108 MB) on one device.

How: `fn` is traced to a jaxpr, its jit calls inlined into one flat program (their own sharding
annotations dropped: the caller's constraints place the outputs). A value's *wave*
is the number of random operations on its longest path from the inputs, its *depth* its place
within the wave; the program runs bucket by bucket, (wave, depth) in order, inside the caller's
trace: a bucket's deterministic ops one by one, its random ops (last in their wave) grouped.
nnx's initializers have three waves (the run's key, each parameter's folded key, its draw), so
one batched call per parameter shape replaces a fold-in and a draw per parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core
from jax.extend.core.primitives import (
    jit_p,
    random_bits_p,
    random_fold_in_p,
    random_split_p,
)

_RANDOM = (random_bits_p, random_fold_in_p, random_split_p)


@dataclasses.dataclass
class _Op:
    """One equation of the flat program; `inputs` are value ids or literals. `wave`: random
    operations on the longest path to it; `depth`: its place within the wave (deterministic
    ops by path length since the wave began, random ones last)."""

    eqn: Any  # the jaxpr equation (primitive, params, context)
    inputs: list
    outputs: list[int]
    wave: int = 0
    depth: float = 0

    @property
    def random(self) -> bool:
        return self.eqn.primitive in _RANDOM


@dataclasses.dataclass
class _Program:
    """`fn`'s jaxpr with its jit calls inlined; values are numbered."""

    ops: list[_Op] = dataclasses.field(default_factory=list)
    constants: dict[int, Any] = dataclasses.field(default_factory=dict)
    count: int = 0

    def new_id(self) -> int:
        self.count += 1
        return self.count - 1


@dataclasses.dataclass(frozen=True)
class _Row:
    """Row `index` of a batched result, not sliced out until something needs it alone."""

    stack: Any
    index: int


def _flatten(jaxpr, consts, input_ids: list, program: _Program) -> list:
    """Appends `jaxpr`'s equations to `program` (jit calls inlined); returns its outputs' ids."""
    ids: dict = {}

    def ref(atom):
        return atom if isinstance(atom, jax_core.Literal) else ids[atom]

    def bind_outputs(outvars, outputs) -> None:
        for var, output in zip(outvars, outputs, strict=True):
            if not isinstance(var, jax_core.DropVar):
                ids[var] = output

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        ids[var] = program.new_id()
        program.constants[ids[var]] = value
    for var, value_id in zip(jaxpr.invars, input_ids, strict=True):
        ids[var] = value_id
    for eqn in jaxpr.eqns:
        inputs = [ref(atom) for atom in eqn.invars]
        if eqn.primitive is jit_p:
            inner = eqn.params["jaxpr"]
            bind_outputs(eqn.outvars, _flatten(inner.jaxpr, inner.consts, inputs, program))
            continue
        outputs = [program.new_id() for _ in eqn.outvars]
        bind_outputs(eqn.outvars, outputs)
        program.ops.append(_Op(eqn, inputs, outputs))
    return [ref(atom) for atom in jaxpr.outvars]


def _schedule(program: _Program) -> list[list[_Op]]:
    """The ops in buckets of (wave, depth), in order; the ops of a bucket are independent."""
    level: dict[int, tuple[int, int]] = {}  # value id -> (wave, depth) of its producer's output
    for op in program.ops:
        places = [level.get(i, (0, 0)) for i in op.inputs if isinstance(i, int)]
        op.wave = max((wave for wave, _ in places), default=0)
        within = max((depth for wave, depth in places if wave == op.wave), default=0)
        op.depth = float("inf") if op.random else within + 1
        produced = (op.wave + 1, 0) if op.random else (op.wave, within + 1)
        for output in op.outputs:
            level[output] = produced
    buckets: dict[tuple, list[_Op]] = {}
    for op in program.ops:
        buckets.setdefault((op.wave, op.depth), []).append(op)
    return [buckets[place] for place in sorted(buckets)]


class _Values:
    """The evaluation's values by id: arrays, or rows of batched results."""

    def __init__(self, constants: dict[int, Any]):
        self.values = dict(constants)

    def raw(self, ref):
        return ref.val if isinstance(ref, jax_core.Literal) else self.values[ref]

    def array(self, ref):
        value = self.raw(ref)
        if isinstance(value, _Row):  # sliced out once, for its first lone consumer
            value = value.stack[value.index]
            self.values[ref] = value
        return value

    def write(self, value_id: int, value) -> None:
        self.values[value_id] = value


def _column(refs: list, values: _Values) -> tuple[Any, int | None]:
    """One input of a group's members as (a batched argument, its vmap axis): a batched
    result's rows in place, one value all members share, or the members' values stacked."""
    raw = [values.raw(ref) for ref in refs]
    if all(isinstance(r, _Row) for r in raw) and len({id(r.stack) for r in raw}) == 1:
        stack, indices = raw[0].stack, [r.index for r in raw]
        if indices == list(range(len(stack))):
            return stack, 0
        if indices == list(range(indices[0], indices[0] + len(indices))):
            return stack[indices[0] : indices[0] + len(indices)], 0
        return jnp.take(stack, np.asarray(indices), axis=0), 0
    if all(isinstance(ref, jax_core.Literal) for ref in refs) and all(
        np.array_equal(ref.val, refs[0].val) for ref in refs
    ):
        return refs[0].val, None
    if all(r is raw[0] for r in raw):
        return raw[0], None
    return jnp.stack([values.array(ref) for ref in refs]), 0


def _signature(op: _Op) -> tuple:
    """Ops of one signature can run as one vmapped call: the same primitive, parameters, input
    types and context (the settings they were traced under, e.g. `jax_threefry_partitionable`,
    which decides the bits: JAX interns contexts, so equal settings are one object)."""
    params = tuple(sorted((name, repr(value)) for name, value in op.eqn.params.items()))
    inputs = tuple(repr(var.aval) for var in op.eqn.invars)
    return (op.eqn.primitive, params, inputs, id(op.eqn.ctx))


def _run_alone(op: _Op, values: _Values) -> None:
    primitive = op.eqn.primitive
    with op.eqn.ctx.manager:
        outputs = primitive.bind(
            *(values.array(ref) for ref in op.inputs), **primitive.get_bind_params(op.eqn.params)
        )
    for value_id, value in zip(op.outputs, _as_list(primitive, outputs), strict=True):
        values.write(value_id, value)


def _run_batched(members: list[_Op], values: _Values) -> None:
    """`members` (one signature) as one vmapped call; their outputs are rows of its results."""
    first = members[0]
    primitive = first.eqn.primitive
    params = primitive.get_bind_params(first.eqn.params)
    columns = [_column([op.inputs[j] for op in members], values) for j in range(len(first.inputs))]
    args, axes = zip(*columns, strict=True)  # a random op has a key (and maybe data) input

    def one(*inputs):
        return primitive.bind(*inputs, **params)

    with first.eqn.ctx.manager:
        batched = jax.vmap(one, in_axes=axes, axis_size=len(members))
        stacked = _as_list(primitive, batched(*args))
    for position, op in enumerate(members):
        for value_id, result in zip(op.outputs, stacked, strict=True):
            values.write(value_id, _Row(result, position))


def _as_list(primitive, outputs) -> list:
    return list(outputs) if primitive.multiple_results else [outputs]


def _evaluate(program: _Program, inputs: list, input_ids: list, output_ids: list) -> list:
    """The program's outputs: bucket by bucket, each bucket's random ops grouped by signature
    (one vmapped call a group), its other ops alone (a row they read is sliced out first)."""
    values = _Values(program.constants)
    for value_id, value in zip(input_ids, inputs, strict=True):
        values.write(value_id, value)
    for bucket in _schedule(program):
        groups: dict[tuple, list[_Op]] = {}
        for op in bucket:
            if op.random:
                groups.setdefault(_signature(op), []).append(op)
            else:
                _run_alone(op, values)
        for members in groups.values():
            if len(members) == 1:
                _run_alone(members[0], values)
            else:
                _run_batched(members, values)
    return [jnp.asarray(values.array(ref)) for ref in output_ids]


def draw_together(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (traceable: arrays in, a pytree of arrays out) with its random operations batched
    by wave; the same outputs. Meant to be called under `jax.jit`, where it traces `fn` once.
    A program with effects (callbacks, prints) runs as `fn` itself."""

    def together(*args):
        flat_args, in_tree = jax.tree.flatten(args)
        closed, out_shapes = jax.make_jaxpr(
            lambda *flat: fn(*in_tree.unflatten(flat)), return_shape=True
        )(*flat_args)
        if closed.effects:
            return fn(*args)
        program = _Program()
        input_ids = [program.new_id() for _ in flat_args]
        output_ids = _flatten(closed.jaxpr, closed.consts, input_ids, program)
        outputs = _evaluate(program, flat_args, input_ids, output_ids)
        return jax.tree.structure(out_shapes).unflatten(outputs)

    return together
