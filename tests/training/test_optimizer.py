"""Parameter masks and the optimizer: freezing, weight decay, LR multipliers, schedules, clipping,
gradient accumulation, and the errors that stop silent misconfiguration."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from octo_like.training.optim import masks
from octo_like.training.optim.optimizer import (
    OptimizerConfig,
    loop_learning_rate,
    make_optimizer,
    make_schedule,
)

LR = 1e-2


class Tiny(nnx.Module):
    """Names like the real model: an encoder to freeze, norms, embeddings, positions, a head."""

    def __init__(self, rngs: nnx.Rngs):
        self.language_encoder = nnx.Dict(
            token_embedding=nnx.Embed(10, 4, rngs=rngs),
            dense=nnx.Linear(4, 4, rngs=rngs),
        )
        self.transformer = nnx.Dict(
            blocks=nnx.List([nnx.Dict(fc=nnx.Linear(4, 4, rngs=rngs))]),
            ln_final=nnx.LayerNorm(4, rngs=rngs),
        )
        self.readout_position = nnx.Param(jnp.ones((2, 4)))
        self.attention_bias = nnx.Param(jnp.ones((2, 2)))  # a 2-D bias: "bias" in the name
        self.head = nnx.Dict(proj=nnx.Linear(4, 3, rngs=rngs), out=nnx.Linear(3, 3, rngs=rngs))


def tiny_state() -> nnx.State:
    return nnx.state(Tiny(nnx.Rngs(0)), nnx.Param)


def flat(tree) -> dict[str, object]:
    """{path: leaf} via the module under test's path rendering."""
    paths = jax.tree.leaves(masks.path_strings(tree))
    return dict(zip(paths, jax.tree.leaves(tree), strict=True))


def random_grads(params, seed: int, scale: float = 1.0):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noise = [
        scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, noise)


def run_steps(tx, params, grads_list):
    update = jax.jit(tx.update)
    state = tx.init(params)
    history = []
    for grads in grads_list:
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return params, state, history


def config(**overrides) -> OptimizerConfig:
    base = dict(
        learning_rate=LR,
        schedule="constant",
        warmup_steps=0,
        weight_decay=0.0,
        clip_gradient_norm=None,
    )
    return OptimizerConfig(**{**base, **overrides})


def find_states(tree, kind):
    found = []

    def visit(node):
        if isinstance(node, kind):
            found.append(node)
            return True
        return False

    jax.tree.leaves(tree, is_leaf=visit)
    return found


# ----- masks -------------------------------------------------------------------------------


def test_path_strings_for_state_and_pure_dict():
    state = tiny_state()
    paths = masks.path_strings(state)
    assert isinstance(paths, nnx.State)
    assert isinstance(paths["head"]["proj"]["kernel"], nnx.Param)  # same structure as params
    names = set(jax.tree.leaves(paths))
    assert "transformer/blocks/0/fc/kernel" in names
    assert "language_encoder/token_embedding/embedding" in names
    assert not any(name.endswith("/value") for name in names)
    assert jax.tree.leaves(masks.path_strings(state.to_pure_dict())) == jax.tree.leaves(paths)
    assert masks.path_strings({"a": [np.zeros(1), {"b": np.zeros(2)}]}) == {
        "a": ["a/0", {"b": "a/1/b"}]
    }


def test_regex_mask_any_pattern_and_errors():
    params = tiny_state().to_pure_dict()
    mask = flat(masks.regex_mask(params, ["^language_encoder/", "ln_final"], name="frozen"))
    assert mask["language_encoder/dense/kernel"] and mask["transformer/ln_final/scale"]
    assert not mask["head/proj/kernel"] and not mask["transformer/blocks/0/fc/kernel"]
    assert not any(jax.tree.leaves(masks.regex_mask(params, (), name="frozen")))
    with pytest.raises(ValueError, match=r"frozen: pattern '\^lang_encoder/' matches no") as info:
        masks.regex_mask(params, ["^head/", "^lang_encoder/"], name="frozen")
    assert "head/proj/kernel" in str(info.value)  # shows example paths to fix the typo against
    with pytest.raises(TypeError, match="sequence of regexes"):
        masks.regex_mask(params, "^head/", name="frozen")
    with pytest.raises(ValueError, match="invalid regex"):
        masks.regex_mask(params, ["head/("], name="frozen")


def test_weight_decay_mask_on_tiny_module():
    mask = flat(masks.weight_decay_mask(tiny_state()))
    decayed = {path for path, flag in mask.items() if flag}
    assert decayed == {
        "language_encoder/dense/kernel",
        "transformer/blocks/0/fc/kernel",
        "head/proj/kernel",
        "head/out/kernel",
    }


def test_weight_decay_mask_on_the_real_model(tmp_path):
    from octo_like.model.config import ImageTokenizerConfig, LanguageConfig, ModelConfig
    from octo_like.model.language.testing import write_tiny_t5_checkpoint
    from octo_like.model.octo_module import OctoModule

    model_config = ModelConfig(
        transformer="dummy",
        image_tokenizers=(ImageTokenizerConfig("primary", encoder="patch16", num_features=16),),
        language=LanguageConfig(
            encoder="t5", checkpoint_dir=write_tiny_t5_checkpoint(str(tmp_path))
        ),
    )
    spec = {
        "observation": {"image_primary": {"shape": [2, 32, 32, 3], "dtype": "uint8"}},
        "task": {},
    }
    module = nnx.eval_shape(lambda: OctoModule(model_config, spec, 50, rngs=nnx.Rngs(0)))
    params = nnx.state(module, nnx.Param)
    mask = flat(masks.weight_decay_mask(params))
    for path, flag in mask.items():
        leaf = path.split("/")[-1]
        if leaf in ("bias", "scale") or "embed" in leaf or "position" in path:
            assert not flag, path
        if leaf == "kernel" and "norm" not in path and len(flat(params)[path].shape) >= 2:
            assert flag, path
    assert mask["transformer/transformer/blocks/0/mlp/fc1/kernel"]
    assert not mask["language_encoder/token_embedding/embedding"]
    assert not mask["image_positions/primary"]

    # Freezing the language encoder of the real model: counts add up, no moments for it.
    tx, info = make_optimizer(config(frozen=("^language_encoder/",)), params, total_steps=10)
    language = masks.count_parameters(nnx.state(module.language_encoder, nnx.Param))
    assert info["frozen_parameters"] == language > 0
    assert info["trainable_parameters"] + language == info["parameters"]
    (adam,) = find_states(jax.eval_shape(tx.init, params), optax.ScaleByAdamState)
    assert masks.count_parameters(adam.mu) == info["trainable_parameters"]


def test_lr_multipliers_first_match_wins_and_errors():
    params = tiny_state()
    values = flat(masks.lr_multipliers(params, {"^head/proj/": 0.5, "^head/": 0.1}))
    assert values["head/proj/kernel"] == 0.5 and values["head/out/bias"] == 0.1
    assert values["transformer/blocks/0/fc/kernel"] == 1.0
    with pytest.raises(ValueError, match="only matches parameters claimed by an earlier rule"):
        masks.lr_multipliers(params, {"^head/": 0.1, "^head/proj/": 0.5})
    with pytest.raises(ValueError, match=r"'\^nothing' matches no parameter"):
        masks.lr_multipliers(params, {"^nothing": 0.1})
    with pytest.raises(ValueError, match="finite number >= 0"):
        masks.lr_multipliers(params, {"^head/": -1.0})


# ----- optimizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("accumulation", [1, 2])
def test_frozen_params_are_bit_identical_and_hold_no_state(accumulation):
    params = tiny_state()
    cfg = config(
        frozen=("^language_encoder/",),
        weight_decay=0.1,
        clip_gradient_norm=1.0,
        gradient_accumulation_steps=accumulation,
    )
    tx, info = make_optimizer(cfg, params, total_steps=20)
    grads = [random_grads(params, seed) for seed in range(4)]
    final, opt_state, _ = run_steps(tx, params, grads)
    before, after = flat(params), flat(final)
    for path in before:
        if path.startswith("language_encoder/"):
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)
        else:
            assert not np.allclose(after[path], before[path]), path

    # Moments (and accumulation buffers) exist only for trainable params: placeholders elsewhere.
    (adam,) = find_states(opt_state, optax.ScaleByAdamState)
    for moments in (adam.mu, adam.nu):
        held = set(flat(moments))
        assert held == {p for p in before if not p.startswith("language_encoder/")}
        assert masks.count_parameters(moments) == info["trainable_parameters"]
    if accumulation > 1:
        (multi,) = find_states(opt_state, optax.MultiStepsState)
        assert masks.count_parameters(multi.acc_grads) == info["trainable_parameters"]
    assert info["frozen_parameters"] == 10 * 4 + 4 * 4 + 4
    assert info["frozen_tensors"] == 3


def test_weight_decay_shrinks_kernels_only():
    params = tiny_state()
    tx, info = make_optimizer(config(weight_decay=0.5), params, total_steps=10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    final, _, _ = run_steps(tx, params, [zeros])
    before, after = flat(params), flat(final)
    decayed = flat(masks.weight_decay_mask(params))
    for path, old in before.items():
        if decayed[path]:  # decoupled decay: p <- p - lr * wd * p
            np.testing.assert_allclose(after[path], old * (1 - LR * 0.5), rtol=1e-6, err_msg=path)
        else:
            np.testing.assert_array_equal(after[path], old, err_msg=path)
    assert info["decayed_parameters"] == 4 * 4 + 4 * 4 + 4 * 3 + 3 * 3


def test_lr_multiplier_scales_the_first_adam_step():
    params = tiny_state()
    tx, info = make_optimizer(config(lr_multipliers={"^head/": 0.1}), params, total_steps=10)
    grads = random_grads(params, 0)
    updates, _ = tx.update(grads, tx.init(params), params)
    for path, update in flat(updates).items():
        scale = 0.1 if path.startswith("head/") else 1.0
        g = flat(grads)[path]
        # Adam's bias-corrected first step is -lr * g / (|g| + eps) ~= -lr * sign(g).
        np.testing.assert_allclose(update, -LR * scale * np.sign(g), rtol=1e-4, err_msg=path)
    assert info["scaled_lr_parameters"] == 4 * 3 + 3 + 3 * 3 + 3


def test_state_and_pure_dict_give_the_same_updates():
    state = tiny_state()
    cfg = config(frozen=("ln_final",), weight_decay=0.1, lr_multipliers={"^head/": 0.3})
    tx, _ = make_optimizer(cfg, state, total_steps=10)
    grads = [random_grads(state, seed) for seed in range(2)]
    from_state, _, _ = run_steps(tx, state, grads)
    from_dict, _, _ = run_steps(tx, state.to_pure_dict(), [g.to_pure_dict() for g in grads])
    for path, value in flat(from_dict).items():
        np.testing.assert_allclose(value, flat(from_state)[path], rtol=1e-6, err_msg=path)


def test_clipping_uses_trainable_gradients_only():
    params = {"encoder": {"kernel": jnp.ones((3, 3))}, "head": {"kernel": jnp.ones((2, 2))}}
    clip, b1 = 1.0, 0.9
    cfg = config(frozen=("^encoder/",), clip_gradient_norm=clip, b1=b1, eps=1e3)
    tx, _ = make_optimizer(cfg, params, total_steps=10)
    small = {
        "encoder": {"kernel": jnp.full((3, 3), 1e6)},
        "head": {"kernel": jnp.full((2, 2), 0.2)},
    }
    _, opt_state, _ = run_steps(tx, params, [small])
    (adam,) = find_states(opt_state, optax.ScaleByAdamState)
    # The huge frozen gradient must not enter the norm: the head's (norm 0.4) is kept as is.
    np.testing.assert_allclose(adam.mu["head"]["kernel"], (1 - b1) * 0.2, rtol=1e-6)

    huge = {"encoder": {"kernel": jnp.ones((3, 3))}, "head": {"kernel": jnp.full((2, 2), 1e6)}}
    updates, opt_state = tx.update(huge, tx.init(params), params)
    (adam,) = find_states(opt_state, optax.ScaleByAdamState)
    assert math.isclose(float(optax.global_norm(adam.mu)), (1 - b1) * clip, rel_tol=1e-5)
    # With eps >> |g| Adam is nearly linear: |update| <= lr * clip / eps, not lr * 1e6 / eps.
    norm = float(optax.global_norm(updates))
    assert 0.9 * LR * clip / 1e3 < norm <= LR * clip / 1e3


def test_gradient_accumulation_equals_one_step_on_the_mean():
    params = tiny_state()
    common = dict(frozen=("^language_encoder/",), weight_decay=0.1, clip_gradient_norm=0.5)
    k = 3
    tx_k, info = make_optimizer(config(gradient_accumulation_steps=k, **common), params, 3 * k)
    tx_1, _ = make_optimizer(config(**common), params, 3)
    grads = [random_grads(params, seed) for seed in range(2 * k)]
    _, _, history = run_steps(tx_k, params, grads)
    means = [
        jax.tree.map(lambda *g: sum(g) / k, *grads[i : i + k]) for i in range(0, len(grads), k)
    ]
    _, _, reference = run_steps(tx_1, params, means)
    for mini in range(k - 1):  # no update until the k-th micro-batch
        for path, value in flat(history[mini]).items():
            np.testing.assert_array_equal(value, flat(params)[path])
    for accumulated, single in ((history[k - 1], reference[0]), (history[2 * k - 1], reference[1])):
        for path, value in flat(accumulated).items():
            np.testing.assert_allclose(value, flat(single)[path], rtol=1e-5, atol=1e-7)
    assert info["optimizer_updates"] == 3


def test_make_optimizer_errors():
    params = tiny_state()
    with pytest.raises(ValueError, match=r"frozen: pattern '\^text_encoder/' matches no parameter"):
        make_optimizer(config(frozen=("^text_encoder/",)), params, total_steps=10)
    with pytest.raises(ValueError, match="freeze every parameter"):
        make_optimizer(config(frozen=(".",)), params, total_steps=10)
    with pytest.raises(ValueError, match=r"lr_multipliers: pattern '\^hed/' matches no"):
        make_optimizer(config(lr_multipliers={"^hed/": 0.1}), params, total_steps=10)
    with pytest.raises(ValueError, match="never update"):
        make_optimizer(config(gradient_accumulation_steps=4), params, total_steps=3)


# ----- schedules and config ----------------------------------------------------------------


def test_warmup_cosine_schedule():
    cfg = OptimizerConfig(learning_rate=1.0, warmup_steps=10, end_learning_rate_fraction=0.1)
    schedule = make_schedule(cfg, total_steps=110)  # decay_steps defaults to total_steps
    value = lambda step: float(schedule(step))
    assert value(0) == 0.0
    assert math.isclose(value(5), 0.5, rel_tol=1e-6)  # linear warmup
    assert math.isclose(value(10), 1.0, rel_tol=1e-6)  # peak at warmup_steps
    assert math.isclose(value(60), 0.1 + 0.9 * 0.5, rel_tol=1e-6)  # cosine half way
    assert math.isclose(value(110), 0.1, rel_tol=1e-6)  # end value at decay_steps
    assert math.isclose(value(1000), 0.1, rel_tol=1e-6)
    explicit = make_schedule(
        OptimizerConfig(learning_rate=1.0, warmup_steps=10, decay_steps=20), 99
    )
    assert math.isclose(float(explicit(20)), 0.0, abs_tol=1e-7)
    with pytest.raises(ValueError, match="must exceed warmup_steps"):
        make_schedule(OptimizerConfig(warmup_steps=10), total_steps=10)


def test_rsqrt_and_constant_schedules():
    rsqrt = make_schedule(
        OptimizerConfig(learning_rate=2.0, schedule="rsqrt", warmup_steps=100), 10
    )
    assert float(rsqrt(0)) == 0.0
    assert math.isclose(float(rsqrt(50)), 1.0, rel_tol=1e-6)
    assert math.isclose(float(rsqrt(100)), 2.0, rel_tol=1e-6)
    for step in (400, 2500):
        assert math.isclose(float(rsqrt(step)), 2.0 * math.sqrt(100 / step), rel_tol=1e-6)
    # Octo's pretraining schedule: peak 3e-4 after 2000 warmup steps, then
    # peak / sqrt((s + 10000) / 10000) with s counted from the end of the warmup.
    octo = make_schedule(
        OptimizerConfig(
            learning_rate=3e-4, schedule="rsqrt", warmup_steps=2000, rsqrt_timescale=10_000
        ),
        300_000,
    )
    for step in (2000, 12_000, 300_000):
        want = 3e-4 / math.sqrt((step - 2000 + 10_000) / 10_000)
        assert math.isclose(float(octo(step)), want, rel_tol=1e-5)
    constant = make_schedule(
        OptimizerConfig(learning_rate=2.0, schedule="constant", warmup_steps=4), 1
    )
    assert [float(constant(s)) for s in (0, 2, 4, 10**6)] == [0.0, 1.0, 2.0, 2.0]
    # The loop-step view divides by the accumulation steps.
    cfg = OptimizerConfig(
        learning_rate=2.0, schedule="constant", warmup_steps=4, gradient_accumulation_steps=2
    )
    assert float(loop_learning_rate(cfg, total_steps=100)(4)) == 1.0


def test_config_validation():
    with pytest.raises(
        ValueError, match="unknown schedule 'cosine'; choices: constant, warmup_cosine, rsqrt"
    ):
        OptimizerConfig(schedule="cosine")
    with pytest.raises(ValueError, match="rsqrt' needs warmup_steps > 0"):
        OptimizerConfig(schedule="rsqrt", warmup_steps=0)
    with pytest.raises(TypeError, match="frozen must be a tuple"):
        OptimizerConfig(frozen="^language_encoder/")
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be an int >= 1"):
        OptimizerConfig(gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match="b2 must be in"):
        OptimizerConfig(b2=1.0)
    with pytest.raises(ValueError, match=r"unknown optimizer settings \['lr'\]"):
        OptimizerConfig.from_dict({"lr": 1e-3})


def test_from_config_dict_keeps_rule_order():
    pairs = ml_collections.FrozenConfigDict(
        {"frozen": ["^a/"], "lr_multipliers": (("^z", 0.1), ("^a", 0.2))}
    )
    cfg = OptimizerConfig.from_dict(pairs)
    assert cfg.frozen == ("^a/",)
    assert list(cfg.lr_multipliers) == ["^z", "^a"]
    as_lists = OptimizerConfig(lr_multipliers=[["^z", 0.1], ["^a", 0.2]])  # what to_dict() yields
    assert list(as_lists.lr_multipliers.items()) == [("^z", 0.1), ("^a", 0.2)]
    sorted_keys = ml_collections.ConfigDict({"lr_multipliers": {"^z": 0.1, "^a": 0.2}})
    with pytest.raises(ValueError, match="ConfigDict sorts its keys"):
        OptimizerConfig.from_dict(sorted_keys)
