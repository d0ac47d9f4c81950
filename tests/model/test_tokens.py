"""Attention rules -> masks: vectorized construction against a slow loop reference."""

import fnmatch

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from octo_like.model.tokens import (
    AttentionRule,
    GroupSpec,
    TokenGroup,
    build_attention_mask,
    combine_with_padding,
    default_rules,
    group_rules,
    split_specs,
)

R = AttentionRule


def reference_mask(prefix, timestep, window):
    """The definition, token by token (prefix tokens live at timestep -1)."""
    tokens = [(s, -1) for s in prefix for _ in range(s.num_tokens)]
    for t in range(window):
        tokens += [(s, t) for s in timestep for _ in range(s.num_tokens)]
    n = len(tokens)
    mask = np.zeros((n, n), bool)
    for i, (q, tq) in enumerate(tokens):
        for j, (k, tk) in enumerate(tokens):
            if k.name in q.attends_to:
                rule = q.attends_to[k.name]
            else:
                hits = [r for p, r in q.attends_to.items() if fnmatch.fnmatchcase(k.name, p)]
                rule = hits[0] if hits else R.NEVER
            if rule == R.ALL:
                mask[i, j] = True
            elif rule == R.CAUSAL:
                mask[i, j] = tk <= tq
            elif rule == R.CURRENT:
                mask[i, j] = tk == tq
            elif rule == R.STRICT_PAST:
                mask[i, j] = tk < tq
    return mask


def random_layout(seed):
    rng = np.random.default_rng(seed)
    n_prefix, n_step = rng.integers(0, 3), rng.integers(1, 4)
    names = [f"task_{i}" for i in range(n_prefix)] + [f"obs_{i}" for i in range(n_step)]
    specs = []
    for name in names:
        rules = {other: R(int(rng.integers(0, 5))) for other in names if rng.random() < 0.7}
        specs.append(GroupSpec(name, int(rng.integers(1, 4)), name.startswith("task"), rules))
    prefix, step = split_specs(specs)
    return prefix, step, int(rng.integers(1, 4))


@pytest.mark.parametrize("seed", range(12))
def test_mask_matches_reference_on_random_layouts(seed):
    prefix, step, window = random_layout(seed)
    np.testing.assert_array_equal(
        build_attention_mask(prefix, step, window), reference_mask(prefix, step, window)
    )


@pytest.mark.parametrize("window", [1, 2, 5])
def test_default_mask_matches_reference(window):
    specs = default_rules(
        {"task_language": 3, "task_goal": 2},
        {"obs_primary": 4, "obs_wrist": 2, "obs_proprio": 1, "readout_action": 1, "readout_v": 2},
    )
    prefix, step = split_specs(specs)
    np.testing.assert_array_equal(
        build_attention_mask(prefix, step, window), reference_mask(prefix, step, window)
    )


def _index(prefix, step, window):
    """{(name, t): slice} of token positions, built by counting."""
    out, pos = {}, 0
    for s in prefix:
        out[(s.name, -1)] = slice(pos, pos + s.num_tokens)
        pos += s.num_tokens
    for t in range(window):
        for s in step:
            out[(s.name, t)] = slice(pos, pos + s.num_tokens)
            pos += s.num_tokens
    return out


def test_default_rules_facts():
    window = 3
    specs = default_rules({"task_language": 2}, {"obs_a": 3, "obs_b": 1, "readout_action": 2})
    prefix, step = split_specs(specs)
    m = build_attention_mask(prefix, step, window)
    idx = _index(prefix, step, window)
    block = lambda q, k: m[idx[q], idx[k]]
    task = ("task_language", -1)
    assert block(task, task).all()
    for t in range(window):
        for g in ("obs_a", "obs_b", "readout_action"):
            assert not block(task, (g, t)).any(), "task tokens must not see timestep tokens"
            assert block((g, t), task).all(), "everyone sees the task"
        for tk in range(window):
            for q in ("obs_a", "obs_b"):
                for k in ("obs_a", "obs_b"):
                    assert block((q, t), (k, tk)).all() == (tk <= t)
                    assert block((q, t), (k, tk)).any() == (tk <= t)
                # nobody but readouts sees readouts
                assert not block((q, t), ("readout_action", tk)).any()
            for k in ("obs_a", "obs_b"):
                assert block(("readout_action", t), (k, tk)).all() == (tk <= t)
                assert block(("readout_action", t), (k, tk)).any() == (tk <= t)
            # causal over its own group (Octo), not only the current step
            assert block(("readout_action", t), ("readout_action", tk)).all() == (tk <= t)
            assert block(("readout_action", t), ("readout_action", tk)).any() == (tk <= t)


def test_readout_groups_do_not_see_each_other():
    specs = default_rules({}, {"obs_a": 1, "readout_x": 1, "readout_y": 1})
    prefix, step = split_specs(specs)
    m = build_attention_mask(prefix, step, 1)
    # order: obs_a, readout_x, readout_y
    np.testing.assert_array_equal(m, [[1, 0, 0], [1, 1, 0], [1, 0, 1]])


def test_strict_past_and_current_semantics():
    step = [
        GroupSpec("obs_a", 1, False, {"obs_a": R.STRICT_PAST}),
        GroupSpec("obs_b", 1, False, {"obs_a": R.CURRENT, "obs_b": R.ALL}),
    ]
    prefix = [GroupSpec("task_t", 1, True, {})]
    m = build_attention_mask(prefix, step, 3)
    a = [1, 3, 5]
    b = [2, 4, 6]
    for t in range(3):
        for tk in range(3):
            assert m[a[t], a[tk]] == (tk < t)  # strict past: not even itself
            assert m[b[t], a[tk]] == (tk == t)
            assert m[b[t], b[tk]]
            assert not m[a[t], b[tk]]
    assert not m[0].any(), "a prefix group with no rules sees nothing, not even itself"
    # a prefix group sits before every timestep: STRICT_PAST to it is always allowed
    step2 = [GroupSpec("obs_a", 1, False, {"task_*": R.STRICT_PAST})]
    assert build_attention_mask(prefix, step2, 2)[1:, 0].all()


def test_exact_name_beats_pattern_and_ambiguity_is_an_error():
    prefix = []
    step = [
        GroupSpec("obs_a", 1, False, {"obs_*": R.CAUSAL, "obs_b": R.NEVER}),
        GroupSpec("obs_b", 1, False, {"obs_*": R.ALL}),
    ]
    m = build_attention_mask(prefix, step, 1)
    assert m[0, 0] and not m[0, 1]
    bad = [GroupSpec("obs_a", 1, False, {"obs_*": R.CAUSAL, "*_a": R.ALL})]
    with pytest.raises(ValueError, match="obs_a"):
        build_attention_mask(prefix, bad, 1)


def test_spec_validation():
    ok = GroupSpec("obs_a", 2, False, {"obs_*": R.CAUSAL})
    with pytest.raises(ValueError, match="obs_a"):
        build_attention_mask([ok], [], 1)
    with pytest.raises(ValueError, match="task_a"):
        build_attention_mask([], [GroupSpec("task_a", 1, True, {})], 1)
    with pytest.raises(ValueError, match="duplicate"):
        build_attention_mask([], [ok, ok], 1)
    with pytest.raises(ValueError, match="window"):
        build_attention_mask([], [ok], 0)
    with pytest.raises(ValueError, match="num_tokens"):
        GroupSpec("obs_a", 0, False, {})
    with pytest.raises(TypeError, match="AttentionRule"):
        GroupSpec("obs_a", 1, False, {"obs_*": "causal"})
    with pytest.raises(ValueError, match="bogus"):
        group_rules("bogus")
    pairs = default_rules([("task_a", 1)], [("obs_b", 2), ("readout_action", 1)])
    assert pairs == default_rules({"task_a": 1}, {"obs_b": 2, "readout_action": 1})
    with pytest.raises(ValueError, match="obs_a"):
        default_rules({"obs_a": 1}, {})
    with pytest.raises(ValueError, match="task_a"):
        default_rules({}, {"task_a": 1})
    with pytest.raises(ValueError, match="duplicate"):
        default_rules({}, [("obs_a", 1), ("obs_a", 2)])


def test_specs_are_hashable_and_immutable():
    a = GroupSpec("obs_a", 2, False, {"obs_*": R.CAUSAL})
    b = GroupSpec("obs_a", 2, False, dict({"obs_*": R.CAUSAL}))
    assert a == b and hash(a) == hash(b)
    assert a != GroupSpec("obs_a", 2, False, {"obs_*": R.ALL})
    with pytest.raises(TypeError):
        a.attends_to["obs_b"] = R.ALL  # type: ignore[index]

    # usable as a static jit argument
    @jax.jit
    def count(x):
        return x + build_attention_mask([], [a], 2).sum()

    # 2 tokens at t=0 see 2 keys, 2 tokens at t=1 see 4 keys
    assert int(count(0)) == 2 * 2 + 2 * 4


def test_combine_with_padding_masks_keys_and_leaves_empty_rows_empty():
    rule = build_attention_mask(*split_specs(default_rules({"task_l": 2}, {"obs_a": 2})), 2)
    token_mask = jnp.array(
        [
            [True, True, True, False, True, True],
            [False, False, False, False, True, True],  # task and the first step padded
        ]
    )
    m = np.asarray(combine_with_padding(rule, token_mask))
    assert m.shape == (2, 1, 6, 6)
    m = m[:, 0]
    for i in range(2):  # exactly rule AND key-is-real: no key added to an empty row
        np.testing.assert_array_equal(m[i], rule & np.asarray(token_mask[i])[None, :])
    # the padded task and the padded step see nothing (attention then spreads uniformly)
    assert not m[1, :4].any() and m[1, 4:].any(axis=-1).all()
    with pytest.raises(ValueError, match="token_mask"):
        combine_with_padding(rule, token_mask[:, :5])


def test_token_group_is_a_pytree():
    g = TokenGroup(jnp.ones((2, 3, 4, 5)), jnp.ones((2, 3, 4), bool))
    leaves = jax.tree.leaves(g)
    assert len(leaves) == 2
    doubled = jax.jit(lambda g: jax.tree.map(lambda x: x * 2, g))(g)
    assert isinstance(doubled, TokenGroup) and float(doubled.tokens[0, 0, 0, 0]) == 2.0
