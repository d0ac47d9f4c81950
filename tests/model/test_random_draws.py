"""`draw_together`: a program's random operations batched, its outputs bit for bit the same."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend import core as jax_core

from octo_like.model.random_draws import draw_together

SHAPES = [(16, 48), (16, 16), (16, 48), (48, 16), (16,), (16, 16), (16,)]


def initializers(key: jax.Array) -> list[jax.Array]:
    """What a module's constructor does: keys folded from a counter, several distributions
    (each behind jax.random's own jit), scaled, some parameters constant."""
    rngs = nnx.Rngs(key)
    out = []
    for i, shape in enumerate(SHAPES):
        if len(shape) == 1:
            out.append(
                jnp.zeros(shape) if i % 2 else 0.02 * jax.random.normal(rngs.params(), shape)
            )
        elif i % 2:
            out.append(nnx.initializers.xavier_uniform()(rngs.params(), shape))
        else:
            out.append(nnx.initializers.lecun_normal()(rngs.params(), shape))
    first, second = jax.random.split(rngs.params())
    out.append(jax.random.truncated_normal(first, -2.0, 2.0, (16, 16)))
    out.append(jax.random.uniform(second, (16, 16)))
    return out


def random_calls(fn, *args) -> list[str]:
    """The names of the random primitives `fn`'s jaxpr calls, nested jits included."""
    names = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name.startswith("random_") and eqn.primitive.name != "random_wrap":
                names.append(eqn.primitive.name)
            for sub in jax_core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


def assert_identical(a, b) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("seed", [0, 7])
def test_batched_draws_are_bit_identical_to_the_plain_program(seed):
    key = jax.random.key(seed)
    plain = jax.jit(initializers)(key)
    together = jax.jit(draw_together(initializers))(key)
    assert_identical(together, plain)
    # not a program that ignores its key: another seed draws other values
    other = jax.jit(draw_together(initializers))(jax.random.key(seed + 1))
    assert not np.array_equal(np.asarray(other[0]), np.asarray(plain[0]))


def test_equal_shaped_draws_become_one_call_each():
    key = jax.random.key(0)
    before = random_calls(initializers, key)
    after = random_calls(draw_together(initializers), key)
    assert before.count("random_bits") == 9  # one per random parameter
    assert before.count("random_fold_in") == 8  # one per `rngs.params()`
    # one batched draw per shape, (16, 48), (16, 16), (48, 16) and (16,), and one for the
    # split pair's (16, 16), a wave later (their keys come from the split)
    assert after.count("random_bits") == 5
    assert after.count("random_fold_in") == 1


def test_a_key_that_depends_on_a_draw_is_made_after_it():
    def chained(key):
        first = jax.random.bits(key, (4,))
        # the next key is folded from the drawn bits: a later wave, not a placeholder
        second = jax.random.fold_in(key, first[0])
        return first, jax.random.normal(second, (4,)), jax.random.normal(key, (4,))

    key = jax.random.key(3)
    assert_identical(jax.jit(draw_together(chained))(key), jax.jit(chained)(key))


def test_raw_uint32_keys_and_pytrees_of_arguments():
    def fn(keys, scale):
        return {"a": scale["s"] * jax.random.normal(keys[0], (3, 5)),
                "b": jax.random.normal(keys[1], (3, 5))}  # fmt: skip

    keys = jax.random.split(jax.random.PRNGKey(1))  # legacy uint32[2] keys
    args = (keys, {"s": jnp.float32(2.0)})
    assert_identical(jax.jit(draw_together(fn))(*args), jax.jit(fn)(*args))


def test_a_program_without_draws_is_unchanged():
    fn = lambda x: {"y": jnp.sin(x) * 2}  # noqa: E731
    x = jnp.arange(4.0)
    assert_identical(jax.jit(draw_together(fn))(x), jax.jit(fn)(x))


def test_draws_inside_a_scan_and_a_program_with_effects_keep_their_values():
    def scanned(key):
        def body(carry, index):
            return carry, jax.random.normal(jax.random.fold_in(carry, index), (3,))

        _, draws = jax.lax.scan(body, key, jnp.arange(4))
        return draws, jax.random.normal(key, (3,))  # the scan runs whole, beside this draw

    seen = []

    def with_effect(key):  # an effect: run as it is, not batched
        jax.debug.callback(lambda: seen.append(1))
        return jax.random.normal(key, (2,)), jax.random.normal(jax.random.fold_in(key, 1), (2,))

    key = jax.random.key(5)
    assert_identical(jax.jit(draw_together(scanned))(key), jax.jit(scanned)(key))
    assert_identical(jax.jit(draw_together(with_effect))(key), jax.jit(with_effect)(key))
    assert seen  # the callback still ran


def test_draws_traced_under_other_settings_are_not_batched_together():
    def fn(key):
        with jax.threefry_partitionable(False):
            a = jax.random.normal(jax.random.fold_in(key, 0), (8, 8))
        with jax.threefry_partitionable(True):
            b = jax.random.normal(jax.random.fold_in(key, 0), (8, 8))
        return a, b

    key = jax.random.key(2)
    assert_identical(jax.jit(draw_together(fn))(key), jax.jit(fn)(key))
