"""`initialize`: a model's initializers as one compiled program, written into their shardings."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from octo_like.model.octo_model import OctoModel, initialize
from octo_like.model.octo_module import OctoModule
from tests.model.test_octo_model import make_batch, tiny_config


@pytest.fixture(scope="module")
def eager_and_spec(tmp_path_factory):
    from octo_like.model.language.testing import write_tiny_t5_checkpoint

    language_dir = write_tiny_t5_checkpoint(str(tmp_path_factory.mktemp("t5")))
    config = tiny_config(language_dir)
    model = OctoModel.from_config(config, make_batch(np.random.default_rng(0)), jax.random.key(3))
    return config, model.input_spec, model.text_tokenizer.vocab_size


def _make(config, spec, vocab):
    return lambda key: OctoModule(config, spec, vocab, rngs=nnx.Rngs(key))


def test_one_program_draws_what_the_eager_build_draws(eager_and_spec):
    make = _make(*eager_and_spec)
    eager = nnx.state(make(jax.random.key(3)), nnx.Param).to_pure_dict()
    compiled = nnx.state(initialize(make, jax.random.key(3)), nnx.Param).to_pure_dict()
    eager_leaves = jax.tree_util.tree_leaves_with_path(eager)
    compiled_leaves = jax.tree.leaves(compiled)
    assert len(eager_leaves) == len(compiled_leaves) > 20
    for (path, a), b in zip(eager_leaves, compiled_leaves, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, path
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    other = nnx.state(initialize(make, jax.random.key(4)), nnx.Param).to_pure_dict()
    assert not all(
        np.array_equal(a, b) for a, b in zip(compiled_leaves, jax.tree.leaves(other), strict=True)
    )


def test_parameters_are_created_in_their_shardings(eager_and_spec):
    make = _make(*eager_and_spec)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(8), ("fsdp",))
    split = NamedSharding(mesh, PartitionSpec("fsdp"))
    whole = NamedSharding(mesh, PartitionSpec())

    def layout(abstract):  # split every parameter whose first axis divides by 8
        return jax.tree.map(lambda leaf: split if leaf.shape and leaf.shape[0] % 8 == 0 else whole,
                            abstract)  # fmt: skip

    module = initialize(make, jax.random.key(3), layout)
    params = jax.tree.leaves(nnx.state(module, nnx.Param))
    placed = [p for p in params if p.sharding == split]
    assert placed and all(p.sharding in (split, whole) for p in params)
    for param in placed:  # each device holds its eighth, not the whole array
        shard = param.addressable_shards[0].data
        assert shard.shape[0] * 8 == param.shape[0]
    reference = nnx.state(make(jax.random.key(3)), nnx.Param)
    for a, b in zip(jax.tree.leaves(reference), params, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    rest = jax.tree.leaves(nnx.split(module, nnx.Param, ...)[2])
    assert all(leaf.sharding == whole for leaf in rest if isinstance(leaf, jax.Array))


def test_the_program_draws_bit_for_bit_what_its_unbatched_twin_draws(eager_and_spec):
    """`initialize` batches the fold-ins and draws of equal shape (`random_draws`): the same
    bits as the program that makes each on its own, with far fewer random calls."""
    from octo_like.model.random_draws import draw_together
    from tests.model.test_random_draws import random_calls

    make = _make(*eager_and_spec)

    def params(key):
        return nnx.state(make(key), nnx.Param).to_pure_dict()

    key = jax.random.key(3)
    unbatched = jax.jit(params)(key)
    compiled = nnx.state(initialize(make, key), nnx.Param).to_pure_dict()
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(unbatched), jax.tree.leaves(compiled), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
    before, after = random_calls(params, key), random_calls(draw_together(params), key)
    assert before.count("random_bits") > 40 and before.count("random_fold_in") > 40
    assert after.count("random_fold_in") <= 2  # one batch of keys (per wave)
    assert after.count("random_bits") < 0.6 * before.count("random_bits")  # one per shape
