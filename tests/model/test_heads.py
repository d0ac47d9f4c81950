"""Action heads: masking, shapes, clipping, randomness, jit, bad inputs, and fitting one batch."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from octo_like.model.heads import (
    ACTION_HEADS,
    BaseActionHead,
    ContinuousActionHead,
    L1ActionHead,
    make_action_head,
)

B, W, N_READOUT, D, H, A = 4, 2, 2, 16, 4, 3
NAMES = ("diffusion", "l1", "mse", "discrete", "flow")
STOCHASTIC = ("diffusion", "flow")
# Small networks keep each file fast on CPU; the fitting test checks they still learn.
SMALL = {
    "diffusion": dict(hidden_dim=64, num_blocks=2, time_dim=16),
    "flow": dict(hidden_dim=64, num_blocks=2, time_dim=16),
    "l1": {},
    "mse": {},
    "discrete": {},
}


@functools.cache
def _cached_head(name, seed, overrides):
    kwargs = {**SMALL[name], **dict(overrides)}
    return make_action_head(
        name, embedding_dim=D, action_dim=A, action_horizon=H, rngs=nnx.Rngs(seed), **kwargs
    )


def make_head(name, seed=0, **overrides):
    """One shared instance per configuration (tests never mutate heads): init runs once."""
    return _cached_head(name, seed, tuple(sorted(overrides.items())))


# Jitted entry points, compiled once per head configuration and reused across tests; eager
# calls of the diffusion chain would dominate the file's run time. `test_jit_matches_eager`
# covers the eager path.
@functools.partial(nnx.jit, static_argnames=("train",))
def jit_loss(head, readouts, actions, timestep_pad_mask, action_pad_mask, rng, train=True):
    return head.loss(readouts, actions, timestep_pad_mask, action_pad_mask, rng=rng, train=train)


@nnx.jit
def jit_loss_and_grads(head, readouts, actions, timestep_pad_mask, action_pad_mask, rng):
    loss_fn = lambda h: h.loss(
        readouts, actions, timestep_pad_mask, action_pad_mask, rng=rng, train=True
    )
    return nnx.value_and_grad(loss_fn, has_aux=True)(head)


@functools.partial(nnx.jit, static_argnames=("sample_shape",))
def jit_predict(head, readouts, rng, sample_shape=()):
    return head.predict_action(readouts, rng=rng, sample_shape=sample_shape)


def make_batch(seed=0):
    """readouts, actions in [-1, 1], timestep_pad_mask, action_pad_mask (all valid)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    readouts = jax.random.normal(k1, (B, W, N_READOUT, D))
    actions = jax.random.uniform(k2, (B, W, H, A), minval=-1.0, maxval=1.0)
    return readouts, actions, jnp.ones((B, W), bool), jnp.ones((B, W, H, A), bool)


def loss_of(head, readouts, actions, timestep_pad_mask, action_pad_mask, seed=1, train=True):
    """The loss as a float, jitted: many calls per head configuration."""
    loss, _ = jit_loss(
        head, readouts, actions, timestep_pad_mask, action_pad_mask, jax.random.key(seed), train
    )
    return float(loss)


def eager_loss(head, batch, seed=1, train=True):
    """The loss as a float, eagerly: cheaper than a compile for a one-off head configuration."""
    return float(head.loss(*batch, rng=jax.random.key(seed), train=train)[0])


def test_registry_is_immutable_and_complete():
    assert isinstance(ACTION_HEADS, types.MappingProxyType)
    assert set(ACTION_HEADS) == set(NAMES)
    with pytest.raises(TypeError):
        ACTION_HEADS["new"] = ContinuousActionHead  # type: ignore[index]
    with pytest.raises(KeyError, match="unknown action head 'nope'"):
        make_action_head("nope", embedding_dim=D, action_dim=A, action_horizon=H, rngs=nnx.Rngs(0))
    assert make_head("l1").loss_type == "l1" and make_head("mse").loss_type == "mse"
    with pytest.raises(ValueError, match="loss_type"):
        L1ActionHead(
            embedding_dim=D, action_dim=A, action_horizon=H, rngs=nnx.Rngs(0), loss_type="mse"
        )


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_scalar_with_metrics(name):
    head = make_head(name)
    assert isinstance(head, BaseActionHead)
    batch = make_batch()
    rng = jax.random.key(0)
    for loss, metrics in (jit_loss(head, *batch, rng), head.loss(*batch, rng=rng, train=False)):
        assert loss.shape == () and np.isfinite(float(loss))
        assert {"loss", "mse"} <= set(metrics)
        assert float(metrics["loss"]) == float(loss)
        for value in metrics.values():
            assert value.shape == () and np.isfinite(float(value))


@pytest.mark.parametrize("name", NAMES)
def test_masked_timestep_contributes_nothing(name):
    head = make_head(name)
    readouts, actions, timestep_pad_mask, action_pad_mask = make_batch()
    timestep_pad_mask = timestep_pad_mask.at[0, 1].set(False).at[2, 0].set(False)
    base = loss_of(head, readouts, actions, timestep_pad_mask, action_pad_mask)
    # Anything in a padded timestep, even NaN, leaves the loss and the gradients untouched.
    garbage = actions.at[0, 1].set(jnp.nan).at[2, 0].set(3.0)
    assert loss_of(head, readouts, garbage, timestep_pad_mask, action_pad_mask) == base
    garbage_readouts = readouts.at[0, 1].add(10.0)
    assert loss_of(head, garbage_readouts, actions, timestep_pad_mask, action_pad_mask) == base
    _, grads = jit_loss_and_grads(
        head, readouts, garbage, timestep_pad_mask, action_pad_mask, jax.random.key(1)
    )
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # ...while a valid timestep does count.
    changed = actions.at[1, 1].add(0.5)
    assert loss_of(head, readouts, changed, timestep_pad_mask, action_pad_mask) != base


@pytest.mark.parametrize("name", NAMES)
def test_all_masked_gives_zero_loss_and_zero_grads(name):
    head = make_head(name)
    readouts, actions, _, action_pad_mask = make_batch()
    none_valid = jnp.zeros((B, W), bool)
    (loss, metrics), grads = jit_loss_and_grads(
        head, readouts, actions, none_valid, action_pad_mask, jax.random.key(0)
    )
    assert float(loss) == 0.0
    assert all(float(v) == 0.0 for v in metrics.values())
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads))
    # The same through action_pad_mask alone.
    no_actions = jnp.zeros_like(action_pad_mask)
    assert loss_of(head, readouts, actions, jnp.ones((B, W), bool), no_actions) == 0.0


def _partial_action_mask():
    mask = np.ones((B, W, H, A), bool)
    mask[..., -1] = False  # a padded action dimension everywhere
    mask[1, 0, 2:] = False  # the chunk runs past the episode end
    return jnp.asarray(mask)


@pytest.mark.parametrize("name", NAMES)
def test_partial_action_pad_mask_masks_exactly_those_elements(name):
    head = make_head(name)
    readouts, actions, timestep_pad_mask, _ = make_batch()
    action_pad_mask = _partial_action_mask()
    base = loss_of(head, readouts, actions, timestep_pad_mask, action_pad_mask)
    noise = jax.random.normal(jax.random.key(9), actions.shape)
    masked_changed = jnp.where(action_pad_mask, actions, actions + 3.0 * noise)
    assert loss_of(head, readouts, masked_changed, timestep_pad_mask, action_pad_mask) == base
    valid_index = tuple(int(i) for i in np.argwhere(np.asarray(action_pad_mask))[7])
    changed = actions.at[valid_index].add(0.3)
    assert loss_of(head, readouts, changed, timestep_pad_mask, action_pad_mask) != base


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_the_mean_over_valid_elements(name):
    """Split the valid timesteps in two: the loss is their element-count-weighted average."""
    head = make_head(name)
    readouts, actions, _, _ = make_batch()
    action_pad_mask = _partial_action_mask()
    first = jnp.zeros((B, W), bool).at[:2].set(True)
    second = jnp.zeros((B, W), bool).at[2:].set(True)
    count = lambda t: float(jnp.sum(t[..., None, None] & action_pad_mask))
    total = loss_of(head, readouts, actions, first | second, action_pad_mask)
    parts = [loss_of(head, readouts, actions, t, action_pad_mask) for t in (first, second)]
    expected = (parts[0] * count(first) + parts[1] * count(second)) / count(first | second)
    np.testing.assert_allclose(total, expected, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["l1", "mse"])
def test_continuous_loss_matches_manual_masked_error(loss_type):
    head = make_head(loss_type)
    readouts, actions, timestep_pad_mask, _ = make_batch()
    action_pad_mask = _partial_action_mask()
    timestep_pad_mask = timestep_pad_mask.at[3, 1].set(False)
    pred = np.asarray(head._predict(head.condition(readouts)))
    err = pred - np.asarray(actions)
    err = np.abs(err) if loss_type == "l1" else err**2
    mask = np.asarray(timestep_pad_mask)[..., None, None] & np.asarray(action_pad_mask)
    expected = err[mask].mean()
    got = loss_of(head, readouts, actions, timestep_pad_mask, action_pad_mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_discrete_loss_matches_manual_cross_entropy():
    head = make_head("discrete", num_bins=8)
    readouts, actions, timestep_pad_mask, _ = make_batch()
    action_pad_mask = _partial_action_mask()
    logits = np.asarray(head.logits(head.condition(readouts)), np.float64)
    targets = np.clip(np.floor((np.asarray(actions) + 1.0) / 0.25), 0, 7).astype(int)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    expected = nll[np.asarray(action_pad_mask)].mean()
    got = loss_of(head, readouts, actions, timestep_pad_mask, action_pad_mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_discrete_bins_cover_low_high_and_clip_outside():
    head = make_head("discrete", num_bins=4, low=-3.0, high=3.0)
    values = jnp.array([-10.0, -3.0, -1.6, 0.0, 1.4, 2.99, 3.0, 10.0])
    np.testing.assert_array_equal(np.asarray(head.to_bins(values)), [0, 0, 0, 2, 2, 3, 3, 3])
    np.testing.assert_allclose(np.asarray(head.bin_centers()), [-2.25, -0.75, 0.75, 2.25])
    inside = jnp.linspace(-2.99, 2.99, 50)
    round_trip = head.from_bins(head.to_bins(inside))
    assert float(jnp.max(jnp.abs(round_trip - inside))) <= head.bin_width / 2 + 1e-6
    with pytest.raises(ValueError, match="high > low"):
        make_head("discrete", low=1.0, high=1.0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sample_shape", [(), (3,)])
def test_predict_action_shape_dtype_and_clip_range(name, sample_shape):
    bound = 0.5
    if name == "discrete":
        head, lo, hi = make_head(name, low=-bound, high=bound), -bound, bound
    else:
        head, lo, hi = make_head(name, max_action=bound), -bound, bound
    readouts, *_ = make_batch()
    out = head.predict_action(readouts, rng=jax.random.key(0), sample_shape=sample_shape)
    assert out.shape == (*sample_shape, B, H, A) and out.dtype == jnp.float32
    out = np.asarray(out)
    assert np.all(out >= lo) and np.all(out <= hi)
    if name in STOCHASTIC:  # untrained samples spread well past 0.5: the clip is what bounds them
        np.testing.assert_allclose(np.abs(out).max(), bound, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_predict_action_uses_only_the_last_timestep(name):
    head = make_head(name)
    readouts, *_ = make_batch()
    out = jit_predict(head, readouts, jax.random.key(0))
    perturbed = readouts.at[:, :-1].set(123.0)
    np.testing.assert_array_equal(
        np.asarray(jit_predict(head, perturbed, jax.random.key(0))), np.asarray(out)
    )


@pytest.mark.parametrize("name", NAMES)
def test_sampling_randomness_follows_rng(name):
    head = make_head(name)
    readouts, *_ = make_batch()
    sample = lambda seed: np.asarray(jit_predict(head, readouts, jax.random.key(seed), (3,)))
    np.testing.assert_array_equal(sample(0), sample(0))
    if name in STOCHASTIC:
        assert not np.allclose(sample(0), sample(1))
        assert not np.allclose(sample(0)[0], sample(0)[1])  # each sample draws its own chain
    else:
        np.testing.assert_array_equal(sample(0), sample(1))
        np.testing.assert_array_equal(sample(0)[0], sample(0)[1])


def test_discrete_sampling_with_temperature_draws_per_sample():
    head = make_head("discrete", num_bins=8, sample_temperature=1.0)
    readouts, *_ = make_batch()
    sample = lambda seed: np.asarray(
        head.predict_action(readouts, rng=jax.random.key(seed), sample_shape=(4,))
    )
    a = sample(0)
    assert not np.array_equal(a, sample(1)) and not np.array_equal(a[0], a[1])
    np.testing.assert_array_equal(a, sample(0))


@pytest.mark.parametrize("name", STOCHASTIC)
def test_dropout_only_in_training(name):
    head = make_head(name, dropout_rate=0.5)
    batch = make_batch()
    train = [eager_loss(head, batch, seed=0), eager_loss(head, batch, seed=0)]
    assert train[0] == train[1]  # dropout draws from the given rng
    assert eager_loss(head, batch, seed=1) != train[0]
    assert eager_loss(head, batch, seed=0, train=False) != train[0]
    no_dropout = make_head(name, dropout_rate=0.0)
    assert eager_loss(no_dropout, batch) == eager_loss(no_dropout, batch, train=False)


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_eager(name):
    head = make_head(name)
    batch = make_batch()
    rng = jax.random.key(3)
    np.testing.assert_allclose(
        float(jit_loss(head, *batch, rng)[0]),
        float(head.loss(*batch, rng=rng, train=True)[0]),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(jit_predict(head, batch[0], rng, (3,))),
        np.asarray(head.predict_action(batch[0], rng=rng, sample_shape=(3,))),
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["diffusion", "mse"])
def test_bfloat16_compute_keeps_float32_params_and_outputs(name):
    head = make_head(name, dtype=jnp.bfloat16)
    params = nnx.state(head, nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    batch = make_batch()
    loss, _ = head.loss(*batch, rng=jax.random.key(0), train=True)
    assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
    assert head.predict_action(batch[0], rng=jax.random.key(0)).dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_name_the_argument_and_expected_shape(name):
    head = make_head(name)
    readouts, actions, timestep_pad_mask, action_pad_mask = make_batch()
    rng = jax.random.key(0)
    cases = [
        ("actions", (readouts, actions[..., :2], timestep_pad_mask, action_pad_mask)),
        ("actions", (readouts, actions[:, :, :3], timestep_pad_mask, action_pad_mask)),
        ("timestep_pad_mask", (readouts, actions, timestep_pad_mask[:, 0], action_pad_mask)),
        ("action_pad_mask", (readouts, actions, timestep_pad_mask, action_pad_mask[:2])),
        ("readouts", (readouts[..., :8], actions, timestep_pad_mask, action_pad_mask)),
        ("readouts", (readouts[:, :, 0], actions, timestep_pad_mask, action_pad_mask)),
    ]
    arg_names = ["readouts", "actions", "timestep_pad_mask", "action_pad_mask"]
    for key, args in cases:
        with pytest.raises(ValueError, match=rf"{key}: expected shape \[") as info:
            head.loss(*args, rng=rng, train=True)
        assert f"got {args[arg_names.index(key)].shape}" in str(info.value)
    with pytest.raises(ValueError, match=r"readouts: expected shape \[b, w, n_readout, 16\]"):
        head.predict_action(readouts[..., :8], rng=rng)


# ------------------------------------------------- the conditioning and masking path, once


@pytest.mark.parametrize("name", NAMES)
def test_every_head_takes_the_shared_conditioning_and_masking_path(name):
    """No head writes its own loss masking or readout pooling: they state their terms only."""
    head_class = ACTION_HEADS[name]
    assert head_class.loss is BaseActionHead.loss
    assert head_class.condition is BaseActionHead.condition
    assert head_class.last_condition is BaseActionHead.last_condition


class _SquaredActions(BaseActionHead):
    """A head of nothing but its terms: the squared (zeroed) actions, and a shifted copy."""

    loss_term = property(lambda self: "squared")

    def loss_terms(self, condition, actions, *, rng, train):
        return {"squared": jnp.square(actions), "shifted": jnp.square(actions) + 1.0}


def test_a_head_stating_only_its_terms_gets_masked_means():
    head = _SquaredActions(embedding_dim=D, action_dim=A, action_horizon=H)
    readouts, actions, timestep_pad_mask, _ = make_batch()
    action_pad_mask = _partial_action_mask()
    timestep_pad_mask = timestep_pad_mask.at[3, 1].set(False)
    valid = np.asarray(timestep_pad_mask)[..., None, None] & np.asarray(action_pad_mask)
    garbage = jnp.where(jnp.asarray(valid), actions, jnp.nan)
    loss, metrics = head.loss(
        readouts, garbage, timestep_pad_mask, action_pad_mask, rng=jax.random.key(0), train=True
    )
    expected = float(np.mean(np.square(np.asarray(actions))[valid]))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert list(metrics) == ["loss", "squared", "shifted"]
    assert float(metrics["loss"]) == float(metrics["squared"]) == float(loss)
    np.testing.assert_allclose(float(metrics["shifted"]), expected + 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("loss_term", "terms"),
    [("nll", ("squared", "shifted")), ("squared", ("loss", "squared"))],
    ids=["missing-loss-term", "loss-named-term-not-the-loss"],
)
def test_terms_that_do_not_name_the_loss_once_are_refused_by_name(loss_term, terms):
    """Its loss term missing, or a term called 'loss' that is not the loss (it would have
    replaced the loss in the metrics): refused, naming the head and the terms it gave."""

    class Bad(_SquaredActions):
        def loss_terms(self, condition, actions, *, rng, train):
            return {name: jnp.square(actions) for name in terms}

    Bad.loss_term = property(lambda self: loss_term)
    with pytest.raises(
        KeyError, match=rf"Bad.loss_terms gave \[{', '.join(map(repr, sorted(terms)))}\]"
    ):
        Bad(embedding_dim=D, action_dim=A, action_horizon=H).loss(
            *make_batch(), rng=jax.random.key(0), train=True
        )


# ---------------------------------------------------------------- fitting one fixed batch

FIT = {  # name -> (steps, learning rate)
    "diffusion": (1500, 3e-3),
    "flow": (1500, 3e-3),
    "l1": (200, 1e-2),
    "mse": (200, 1e-2),
    "discrete": (200, 1e-2),
}
EVAL_DRAWS = 32


def _fit(head, batch, steps, lr):
    """``steps`` adam updates inside one jitted `lax.scan`; returns the trained head."""
    graphdef, params = nnx.split(head)
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def loss_fn(params, rng):
        return nnx.merge(graphdef, params).loss(*batch, rng=rng, train=True)[0]

    @jax.jit
    def train(params):
        def step(carry, i):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params, jax.random.fold_in(jax.random.key(42), i))
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
        return params

    return nnx.merge(graphdef, train(params))


@functools.partial(jax.jit, static_argnums=0)
def _mean_eval_loss(graphdef, params, batch):
    keys = jax.random.split(jax.random.key(1234), EVAL_DRAWS)
    one = lambda key: nnx.merge(graphdef, params).loss(*batch, rng=key, train=False)[0]
    return jnp.mean(jax.vmap(one)(keys))


def _eval_loss(head, batch):
    """Loss averaged over a fixed set of rng draws (diffusion steps / flow times and noise)."""
    return float(_mean_eval_loss(*nnx.split(head), batch))


@pytest.mark.parametrize("name", NAMES)
def test_fits_one_batch(name):
    batch = make_batch(seed=5)
    head = make_head(name)
    before = _eval_loss(head, batch)
    steps, lr = FIT[name]
    head = _fit(head, batch, steps, lr)
    after = _eval_loss(head, batch)
    assert after < before / 10, f"{name}: loss {before:.4f} -> {after:.4f}"
    readouts, actions = batch[:2]
    samples = jit_predict(head, readouts, jax.random.key(7), (3,))
    error = float(jnp.mean(jnp.abs(samples - actions[:, -1])))
    spread = float(jnp.mean(jnp.abs(actions[:, -1] - jnp.mean(actions[:, -1]))))
    assert error < spread / 4, f"{name}: sample error {error:.3f} vs data spread {spread:.3f}"
