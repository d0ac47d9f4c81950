"""AdamW with learning-rate schedules, frozen parameters, per-parameter LR multipliers, gradient
clipping and gradient accumulation, built from one small typed config.

The transformation, applied to a gradient tree (an `nnx.State` of `nnx.Param` or a pure dict):

    partition by path:
      frozen    -> zero update, no optimizer state at all (optax.MaskedNode placeholders)
      trainable -> [MultiSteps(k) accumulation] clip_by_global_norm (over trainable grads only)
                   -> Adam moments -> decoupled weight decay (weight_decay_mask) -> -lr(schedule)
    -> scale each leaf by its LR multiplier

Masks are computed from the tree handed to `init`/`update` (at trace time), so the same optimizer
works for a `State` and its pure dict; `make_optimizer` checks the rules eagerly on `params`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from octo_like.config.typed import ConfigError
from octo_like.training.optim import masks

SCHEDULES = ("constant", "warmup_cosine", "rsqrt")
MU_DTYPES = ("float32", "bfloat16")
FROZEN, TRAINABLE = "frozen", "trainable"


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer settings; validated on construction.

    Schedule lengths (`warmup_steps`, `decay_steps`) count OPTIMIZER updates, i.e. training-loop
    steps divided by `gradient_accumulation_steps`.

    learning_rate: peak learning rate.
    schedule: "constant" (linear warmup, then flat), "warmup_cosine" (linear warmup from 0 to the
      peak at `warmup_steps`, cosine down to `end_learning_rate_fraction * learning_rate` at
      `decay_steps`, which includes the warmup) or "rsqrt" (linear warmup, then
      `learning_rate * sqrt(T / (step - warmup_steps + T))` with T = `rsqrt_timescale`,
      default `warmup_steps`; Octo pretrains with warmup 2000 and T = 10000).
    decay_steps: cosine length; None -> the total number of optimizer updates of the run.
    b2: 0.95 rather than Adam's 0.999: the second moment forgets faster, which damps the loss
      spikes large-batch transformer pretraining is prone to.
    mu_dtype: the dtype Adam's first moment is STORED in ("bfloat16" halves its memory, as Octo
      does; the update itself is computed in float32 from the stored moment); None: float32.
    weight_decay_rule: which parameters decay (`masks.WEIGHT_DECAY_RULES`): "shape" (matrices
      and kernels, not biases, norms, embeddings or positions), "kernel" (every path containing
      `kernel`: Octo's rule, which also decays the diffusion head's 1-D Fourier frequencies) or
      "all" (optax.adamw's default without a mask, as Octo's examples/02 uses it).
    clip_gradient_norm: global-norm clip over the trainable gradients; None disables it.
    frozen: regexes (re.search on paths like `language_encoder/layers/0/...`) of frozen params.
    lr_multipliers: regex -> multiplier, first match wins (in insertion order), default 1.0. May
      also be given as a tuple of (regex, multiplier) pairs; ml_collections sorts dict keys, so
      configs with several rules should use pairs.
    ema_decay: keep an exponential moving average of the weights with this decay (e.g. 0.999:
      about the last 1,000 steps) and evaluate and save the average (`step.TrainState`);
      None: no average.
    """

    learning_rate: float = 3e-4
    schedule: str = "warmup_cosine"
    warmup_steps: int = 2000
    decay_steps: int | None = None
    rsqrt_timescale: int | None = None
    end_learning_rate_fraction: float = 0.0
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    mu_dtype: str | None = None
    weight_decay_rule: str = "shape"
    clip_gradient_norm: float | None = 1.0
    gradient_accumulation_steps: int = 1
    frozen: tuple[str, ...] = ()
    lr_multipliers: Mapping[str, float] | tuple[tuple[str, float], ...] = dataclasses.field(
        default_factory=dict
    )
    ema_decay: float | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choices: {', '.join(SCHEDULES)}")
        _check(self.learning_rate > 0, "learning_rate must be > 0", self.learning_rate)
        _check_int(self.warmup_steps, "warmup_steps", minimum=0)
        if self.schedule == "rsqrt":
            _check(self.warmup_steps > 0, "schedule 'rsqrt' needs warmup_steps > 0", 0)
        if self.decay_steps is not None:
            _check_int(self.decay_steps, "decay_steps", minimum=1)
        if self.rsqrt_timescale is not None:
            _check_int(self.rsqrt_timescale, "rsqrt_timescale", minimum=1)
        _check(
            0.0 <= self.end_learning_rate_fraction <= 1.0,
            "end_learning_rate_fraction must be in [0, 1]",
            self.end_learning_rate_fraction,
        )
        _check(self.weight_decay >= 0, "weight_decay must be >= 0", self.weight_decay)
        _check(0.0 <= self.b1 < 1.0, "b1 must be in [0, 1)", self.b1)
        _check(0.0 <= self.b2 < 1.0, "b2 must be in [0, 1)", self.b2)
        _check(self.eps > 0, "eps must be > 0", self.eps)
        if self.mu_dtype is not None and self.mu_dtype not in MU_DTYPES:
            raise ValueError(f"mu_dtype must be None or one of {MU_DTYPES}, got {self.mu_dtype!r}")
        if self.weight_decay_rule not in masks.WEIGHT_DECAY_RULES:
            raise ValueError(
                f"weight_decay_rule must be one of {masks.WEIGHT_DECAY_RULES}, "
                f"got {self.weight_decay_rule!r}"
            )
        if self.clip_gradient_norm is not None:
            _check(self.clip_gradient_norm > 0, "clip_gradient_norm must be > 0 or None", 0)
        _check_int(self.gradient_accumulation_steps, "gradient_accumulation_steps", minimum=1)
        if self.ema_decay is not None:
            decay = self.ema_decay
            _check(0.0 < decay < 1.0, "ema_decay must be in (0, 1) or None", decay)
        if isinstance(self.frozen, str):
            raise TypeError(f"frozen must be a tuple of regexes, not the string {self.frozen!r}")
        object.__setattr__(self, "frozen", tuple(self.frozen))
        rules = masks.multiplier_rules(self.lr_multipliers)
        patterns = [pattern for pattern, _ in rules]
        if len(set(patterns)) != len(patterns):
            raise ValueError(f"lr_multipliers: duplicate regexes in {patterns}")
        object.__setattr__(self, "lr_multipliers", dict(rules))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> OptimizerConfig:
        """From a plain dict or an ml_collections ConfigDict; unknown keys are errors."""
        values = dict(values.items())
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown optimizer settings {unknown}; valid: {sorted(fields)}")
        rules = values.get("lr_multipliers")
        if rules is not None and not isinstance(rules, (Mapping, Sequence)):
            # ConfigDict is not a Mapping and iterates its keys in SORTED order, which would
            # silently reorder first-match-wins rules.
            items = list(rules.items())
            if len(items) > 1:
                raise ValueError(
                    "lr_multipliers given as a ConfigDict with several rules: ConfigDict sorts "
                    "its keys, so rule order (first match wins) would be lost; write a tuple of "
                    "(regex, multiplier) pairs instead"
                )
            values["lr_multipliers"] = dict(items)
        return cls(**values)


def _check(condition: bool, message: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"{message}, got {value!r}")


def _check_int(value: Any, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def make_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer update count (0-based).

    `total_steps` is the number of optimizer updates of the run (the cosine length by default).
    """
    _check_int(total_steps, "total_steps", minimum=1)
    peak, warmup = config.learning_rate, config.warmup_steps

    def warmup_factor(step: jax.Array) -> jax.Array:
        return jnp.minimum(step / warmup, 1.0) if warmup > 0 else jnp.ones_like(step)

    if config.schedule == "constant":
        return lambda step: peak * warmup_factor(jnp.asarray(step, jnp.float32))

    if config.schedule == "rsqrt":
        timescale = float(config.rsqrt_timescale or warmup)

        def rsqrt(step: jax.Array) -> jax.Array:
            step = jnp.asarray(step, jnp.float32)
            decay = jnp.sqrt(timescale / (jnp.maximum(step - warmup, 0.0) + timescale))
            return peak * warmup_factor(step) * decay

        return rsqrt

    decay_steps = total_steps if config.decay_steps is None else config.decay_steps
    if decay_steps <= warmup:
        raise ValueError(
            f"warmup_cosine: decay_steps ({decay_steps}, which includes the warmup"
            f"{'; defaulted to total_steps' if config.decay_steps is None else ''}) must exceed "
            f"warmup_steps ({warmup})"
        )
    end = config.end_learning_rate_fraction

    def warmup_cosine(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        progress = jnp.clip((step - warmup) / (decay_steps - warmup), 0.0, 1.0)
        cosine = end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
        return peak * jnp.where(step < warmup, warmup_factor(step), cosine)

    return warmup_cosine


def optimizer_updates(config: OptimizerConfig, total_steps: int) -> int:
    """Optimizer updates in a run of `total_steps` training-loop steps (calls to `update`)."""
    _check_int(total_steps, "total_steps", minimum=1)
    updates = total_steps // config.gradient_accumulation_steps
    if updates < 1:
        raise ValueError(
            f"total_steps ({total_steps}) < gradient_accumulation_steps "
            f"({config.gradient_accumulation_steps}): the run would never update the parameters"
        )
    return updates


def loop_learning_rate(config: OptimizerConfig, total_steps: int) -> Callable[[Any], jax.Array]:
    """Learning rate used at training-loop step `step` (for logging); see `make_optimizer`."""
    schedule = make_schedule(config, optimizer_updates(config, total_steps))
    return lambda step: schedule(jnp.asarray(step) // config.gradient_accumulation_steps)


def schedule_change(
    config: OptimizerConfig, old_total: int, new_total: int, step: int
) -> str | None:
    """The warning for a run resumed at loop step `step` with num_steps `old_total` ->
    `new_total`, or None when the rebuilt schedule agrees with the saved one there (constant,
    rsqrt, or an explicit `decay_steps`: their rates do not depend on the run's length).

    Names the rate of the saved run's last step and the rate the resumed run starts with: the
    rebuilt cosine is stretched to the new length, so its rate at `step` is higher.
    """
    if old_total == new_total:
        return None
    old, new = loop_learning_rate(config, old_total), loop_learning_rate(config, new_total)
    if math.isclose(float(old(step)), float(new(step)), rel_tol=1e-6, abs_tol=1e-12):
        return None
    last, first = float(old(max(step - 1, 0))), float(new(step))
    return (
        f"num_steps changed from {old_total} to {new_total}: the learning-rate schedule is "
        f"rebuilt for {new_total} steps, so the rate jumps from {last:.3g} (step {step}, the "
        f"saved run's schedule) to {first:.3g} (step {step + 1}); "
        f"--config.optimizer.decay_steps={optimizer_updates(config, old_total)} keeps the saved "
        "schedule (docs/training.md, 'Extending a run')"
    )


def _scale_per_leaf(multipliers_of: Callable[[Any], Any]) -> optax.GradientTransformation:
    """Multiplies each update leaf by its value in `multipliers_of(updates)` (no state)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        scaled = jax.tree.map(
            lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers_of(updates)
        )
        return scaled, state

    return optax.GradientTransformation(init, update)


def make_optimizer(
    config: OptimizerConfig, params: Any, total_steps: int
) -> tuple[optax.GradientTransformation, dict[str, int]]:
    """The optax transformation and parameter counts for logging.

    `params`: the parameter tree (arrays or `jax.ShapeDtypeStruct`s), used to check the regex
    rules and count parameters; `init`/`update` then take trees with the same paths.
    `total_steps`: training-loop steps, i.e. calls to `update`; with accumulation over k steps the
    schedule runs over `total_steps // k` optimizer updates.
    Raises ConfigError (a ValueError) when a frozen / lr-multiplier regex matches no parameter
    (naming the pattern and example paths) or when nothing is left to train.
    """
    updates = optimizer_updates(config, total_steps)
    schedule = make_schedule(config, updates)
    frozen = masks.regex_mask(params, config.frozen, name="frozen")
    rule = config.weight_decay_rule
    decayed = jax.tree.map(lambda d, f: d and not f, masks.weight_decay_mask(params, rule), frozen)
    multipliers = masks.lr_multipliers(params, config.lr_multipliers)
    trainable = jax.tree.map(lambda f: not f, frozen)
    if masks.count_parameters(params, trainable) == 0:
        raise ConfigError(f"frozen patterns {config.frozen} freeze every parameter")

    def labels_of(tree: Any) -> Any:
        mask = masks.regex_mask(tree, config.frozen, name="frozen")
        return jax.tree.map(lambda f: FROZEN if f else TRAINABLE, mask)

    steps: list[optax.GradientTransformation] = []
    if config.clip_gradient_norm is not None:
        steps.append(optax.clip_by_global_norm(config.clip_gradient_norm))
    mu_dtype = None if config.mu_dtype is None else jnp.dtype(config.mu_dtype)
    steps.append(optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps, mu_dtype=mu_dtype))
    if config.weight_decay > 0:
        decay_mask = lambda tree: masks.weight_decay_mask(tree, rule)  # noqa: E731
        steps.append(optax.add_decayed_weights(config.weight_decay, mask=decay_mask))
    steps.append(optax.scale_by_learning_rate(schedule))
    inner = optax.chain(*steps)
    if config.gradient_accumulation_steps > 1:
        # Inside the trainable branch so that frozen params get no accumulation buffers either.
        inner = optax.MultiSteps(
            inner, config.gradient_accumulation_steps
        ).gradient_transformation()

    tx = optax.partition({TRAINABLE: inner, FROZEN: optax.set_to_zero()}, labels_of)
    if config.lr_multipliers:
        rules = config.lr_multipliers
        tx = optax.chain(tx, _scale_per_leaf(lambda tree: masks.lr_multipliers(tree, rules)))

    info = {
        "parameters": masks.count_parameters(params),
        "trainable_parameters": masks.count_parameters(params, trainable),
        "frozen_parameters": masks.count_parameters(params, frozen),
        "decayed_parameters": masks.count_parameters(params, decayed),
        "trainable_tensors": sum(jax.tree.leaves(trainable)),
        "frozen_tensors": sum(jax.tree.leaves(frozen)),
        "scaled_lr_parameters": masks.count_parameters(
            params, jax.tree.map(lambda m, t: t and m != 1.0, multipliers, trainable)
        ),
        "optimizer_updates": updates,
    }
    return tx, info
