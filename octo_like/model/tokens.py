"""Token groups and the attention rules between them.

The transformer sees one flat sequence: every prefix (task) group once, then for each timestep
``t`` of the window every per-timestep group in order::

    [task_a, task_b, | obs_x(0), obs_y(0), readout(0) | obs_x(1), obs_y(1), readout(1) | ...]

Who may attend to whom is declared per group (`GroupSpec.attends_to`, patterns over other groups'
names) rather than written as a hand-built mask, so adding a camera or a readout cannot silently
break causality. `build_attention_mask` turns the declarations into a ``bool[N, N]`` matrix with
vectorized lookups; `combine_with_padding` adds the per-example key padding.

Prefix tokens sit at timestep ``-1``: before every window step, so ``CAUSAL`` and ``STRICT_PAST``
rules from a timestep group to a prefix group let it see the whole prefix.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import types
from collections.abc import Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

PREFIX_TIMESTEP = -1

TASK_PREFIX = "task_"
OBS_PREFIX = "obs_"
READOUT_PREFIX = "readout_"


@flax.struct.dataclass
class TokenGroup:
    """Tokens of one group and which of them are real.

    tokens: float[b, n, d] (prefix group) or float[b, w, n, d] (per-timestep group).
    mask: bool[b, n] / bool[b, w, n]; False marks padding (missing camera, empty instruction,
    padded timestep). Padded tokens are never attended to by real ones.
    """

    tokens: jax.Array
    mask: jax.Array


class AttentionRule(enum.Enum):
    """How a query token may see key tokens of another group, by timestep."""

    NEVER = 0
    CAUSAL = 1  # key timestep <= query timestep
    CURRENT = 2  # key timestep == query timestep
    STRICT_PAST = 3  # key timestep < query timestep
    ALL = 4


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """Static description of a token group: its size, placement and attention rules.

    attends_to maps patterns over group names (fnmatch, e.g. ``"obs_*"``) to rules. An exact
    name beats patterns; several patterns matching one group with different rules is an error.
    Groups matched by no pattern are never seen. Specs are hashable so they can be static
    arguments of jitted functions.
    """

    name: str
    num_tokens: int
    is_prefix: bool
    attends_to: Mapping[str, AttentionRule]

    def __post_init__(self):
        if not self.name:
            raise ValueError("GroupSpec.name must be non-empty")
        if int(self.num_tokens) < 1:
            raise ValueError(
                f"GroupSpec {self.name!r}: num_tokens must be >= 1, got {self.num_tokens}"
            )
        for pattern, rule in self.attends_to.items():
            if not isinstance(rule, AttentionRule):
                raise TypeError(
                    f"GroupSpec {self.name!r}: rule for {pattern!r} must be an AttentionRule, "
                    f"got {rule!r}"
                )
        object.__setattr__(self, "attends_to", types.MappingProxyType(dict(self.attends_to)))

    def __hash__(self) -> int:
        rules = tuple(sorted((k, v.value) for k, v in self.attends_to.items()))
        return hash((self.name, self.num_tokens, self.is_prefix, rules))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GroupSpec):
            return NotImplemented
        return (
            self.name == other.name
            and self.num_tokens == other.num_tokens
            and self.is_prefix == other.is_prefix
            and dict(self.attends_to) == dict(other.attends_to)
        )

    def rule_for(self, key_name: str) -> AttentionRule:
        """The rule this group applies to keys of group `key_name`."""
        if key_name in self.attends_to:
            return self.attends_to[key_name]
        matched = {r for p, r in self.attends_to.items() if fnmatch.fnmatchcase(key_name, p)}
        if len(matched) > 1:
            pats = [p for p in self.attends_to if fnmatch.fnmatchcase(key_name, p)]
            raise ValueError(
                f"GroupSpec {self.name!r}: patterns {pats} all match group {key_name!r} with "
                f"different rules; add an exact entry for {key_name!r}"
            )
        return matched.pop() if matched else AttentionRule.NEVER


def group_rules(name: str) -> dict[str, AttentionRule]:
    """Octo's rules for one group, chosen by its name prefix (task_/obs_/readout_).

    Task tokens see task tokens; observations see the task and observations up to their own
    timestep; a readout sees the task, observations up to its timestep and its own group up to
    its timestep (causal, as in Octo). No pattern matches readouts from outside, so nothing else
    attends to them.
    """
    task = {TASK_PREFIX + "*": AttentionRule.ALL}
    if name.startswith(TASK_PREFIX):
        return task
    if name.startswith(OBS_PREFIX):
        return {**task, OBS_PREFIX + "*": AttentionRule.CAUSAL}
    if name.startswith(READOUT_PREFIX):
        return {**task, OBS_PREFIX + "*": AttentionRule.CAUSAL, name: AttentionRule.CAUSAL}
    raise ValueError(
        f"group_rules: group name {name!r} must start with {TASK_PREFIX!r}, {OBS_PREFIX!r} "
        f"or {READOUT_PREFIX!r}"
    )


GroupSizes = Mapping[str, int] | Sequence[tuple[str, int]]


def default_rules(prefix: GroupSizes, timestep: GroupSizes) -> tuple[GroupSpec, ...]:
    """Specs with Octo's rules (`group_rules`) from ``(name, num_tokens)`` in sequence order.

    prefix / timestep: a mapping or a sequence of pairs; prefix names must start with
    ``task_``, timestep names with ``obs_`` or ``readout_``.
    """
    prefix = list(prefix.items()) if isinstance(prefix, Mapping) else list(prefix)
    timestep = list(timestep.items()) if isinstance(timestep, Mapping) else list(timestep)
    for name, _ in prefix:
        if not name.startswith(TASK_PREFIX):
            raise ValueError(f"prefix group {name!r} must be named {TASK_PREFIX}*")
    for name, _ in timestep:
        if not name.startswith((OBS_PREFIX, READOUT_PREFIX)):
            raise ValueError(
                f"timestep group {name!r} must be named {OBS_PREFIX}* or {READOUT_PREFIX}*"
            )
    specs = [GroupSpec(n, int(k), True, group_rules(n)) for n, k in prefix]
    specs += [GroupSpec(n, int(k), False, group_rules(n)) for n, k in timestep]
    split_specs(specs)  # unique names
    return tuple(specs)


def split_specs(specs: Sequence[GroupSpec]) -> tuple[list[GroupSpec], list[GroupSpec]]:
    """(prefix specs, timestep specs), each in the given order; names must be unique."""
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate group names in specs: {dupes}")
    return [s for s in specs if s.is_prefix], [s for s in specs if not s.is_prefix]


def _rule_table(specs: Sequence[GroupSpec]) -> np.ndarray:
    """int[G, G] rule codes, (query group, key group). Loops over groups, not tokens."""
    table = np.zeros((len(specs), len(specs)), np.int8)
    for i, query in enumerate(specs):
        for j, key in enumerate(specs):
            table[i, j] = query.rule_for(key.name).value
    return table


def token_layout(
    prefix: Sequence[GroupSpec], timestep: Sequence[GroupSpec], window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token (group index, timestep), int[N] each, in sequence order.

    Group indices refer to ``[*prefix, *timestep]``; prefix tokens have timestep -1.
    """
    p_sizes = np.array([s.num_tokens for s in prefix], np.int64)
    t_sizes = np.array([s.num_tokens for s in timestep], np.int64)
    p_group = np.repeat(np.arange(len(prefix)), p_sizes)
    step_group = np.repeat(np.arange(len(prefix), len(prefix) + len(timestep)), t_sizes)
    group = np.concatenate([p_group, np.tile(step_group, window)])
    time = np.concatenate(
        [
            np.full(p_group.shape, PREFIX_TIMESTEP),
            np.repeat(np.arange(window), step_group.shape[0]),
        ]
    )
    return group.astype(np.int32), time.astype(np.int32)


def build_attention_mask(
    prefix: Sequence[GroupSpec], timestep: Sequence[GroupSpec], window: int
) -> np.ndarray:
    """bool[N, N] (query, key): may the query token attend to the key token.

    N = sum(prefix sizes) + window * sum(timestep sizes), order as in the module docstring.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    for s in prefix:
        if not s.is_prefix:
            raise ValueError(f"group {s.name!r} is in `prefix` but has is_prefix=False")
    for s in timestep:
        if s.is_prefix:
            raise ValueError(f"group {s.name!r} is in `timestep` but has is_prefix=True")
    specs = [*prefix, *timestep]
    split_specs(specs)  # name uniqueness
    table = _rule_table(specs)
    group, time = token_layout(prefix, timestep, window)

    rule = table[group[:, None], group[None, :]]  # int8[N, N] rule code per (query, key)
    tq, tk = time[:, None], time[None, :]
    allowed_by_time = {
        AttentionRule.CAUSAL: lambda: tk <= tq,
        AttentionRule.CURRENT: lambda: tk == tq,
        AttentionRule.STRICT_PAST: lambda: tk < tq,
        AttentionRule.ALL: lambda: True,
    }
    mask = np.zeros(rule.shape, bool)
    for r, allowed in allowed_by_time.items():  # one pass per rule kind; NEVER stays False
        mask |= (rule == r.value) & allowed()
    return mask


def combine_with_padding(rule_mask: jax.Array, token_mask: jax.Array) -> jax.Array:
    """bool[b, 1, N, N]: rule mask AND key is real.

    A query row left with no visible key (e.g. the language prefix of a goal-only task)
    stays all False: attention then spreads uniformly over every key, as softmax over
    dtype-minimum logits does in Octo, and stays finite. Such rows are tokens nobody reads
    (padding, or a missing task); real queries never see padded keys either way.
    rule_mask: bool[N, N]; token_mask: bool[b, N].
    """
    rule_mask = jnp.asarray(rule_mask, bool)
    token_mask = jnp.asarray(token_mask, bool)
    n = rule_mask.shape[0]
    if rule_mask.shape != (n, n):
        raise ValueError(f"rule_mask must be bool[N, N], got shape {rule_mask.shape}")
    if token_mask.ndim != 2 or token_mask.shape[1] != n:
        raise ValueError(f"token_mask must be bool[b, {n}], got shape {token_mask.shape}")
    mask = rule_mask[None] & token_mask[:, None, :]  # [b, N(q), N(k)]
    return mask[:, None]
