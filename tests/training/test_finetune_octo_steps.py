"""Octo's fine-tuning recipe (configs/finetune_octo.py:full,multimodal) takes the steps Octo's
own code takes: 3 train steps of scripts/finetune.py with the optimizer `create_optimizer`
builds from scripts/configs/finetune_config.py, run by Octo in its pinned environment on the
tiny Octo-1.5 fixture (tests/fixtures/octo15/finetune.npz, made by make_finetune_fixture.py:
its batches, the diffusion head's time and noise draws, and per step the loss, the gradients,
the optimizer's moments and the parameters after the update), replayed here through this
project's fine-tuning program (`PretrainedInitializer` + `build_program`, as finetune.py runs
them) from the converted checkpoint. Switching any recipe item back to this project's default
breaks the equality, which each test below checks.

Tolerances (float32, CPU), from measurements on this fixture. Moving every weight by a
relative +1e-6 moves the step-0 loss by 3.2e-6 relative and the gradients by 1.5e-5 of their
global norm (2.1e-5 of a tensor's at most); Octo's and this program's differ by at most 2.3e-7
(loss), 2.5e-7 (gradient norm) and 2.7e-6 per tensor (gradients). Hence:
- loss and gradient norm: relative 1e-6;
- gradients: per tensor, error norm <= 1e-5 x max(its norm, 1e-3 x the global norm) (the stems'
  conv biases before a one-channel GroupNorm and the attention key biases have gradients that
  are zero in exact arithmetic: rounding noise in both programs, ~1e-9 of the global norm);
- the optimizer alone, fed Octo's recorded gradients: an update element is "off" when further
  than 2e-5 relative from Octo's (the rates differ by 7.6e-6: Octo's linear warm-up rounds 1.5e-7
  to 1.5000114e-7). Measured: 0.5% (step 1) and 0.14% (step 2) of the elements are off, never
  more than 25% of a tensor: the gradient's clip divides by a global norm summed in another
  order, and a one-ulp change flips the bfloat16 rounding of a first-moment element (a 2^-8
  relative step). The test allows 1% overall and 25% per tensor; switching b2, the first
  moment's dtype, the warm-up or the clip back puts 97-99% of the elements off, and the shape
  decay rule every element of the Fourier frequencies;
- parameters after each step of the whole program: within 2 float32 ulps of Octo's plus 2^-6 of
  the tensor's largest update of the step (the updates are 1e-7-size steps on ~0.1-size
  weights, a few ulps; a flipped bfloat16 first-moment element moves its update by a few 2^-8
  of that).
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import numpy as np
import pytest
from flax import nnx

from configs import finetune_octo
from octo_like.model.octo_import.convert import convert_octo, read_octo_params
from octo_like.model.octo_import.params import flatten, target_path
from octo_like.model.octo_model import OctoModel
from octo_like.training import masks, sharding
from octo_like.training.finetune import PretrainedInitializer
from octo_like.training.finetune_config import parse_finetune_config
from octo_like.training.optimizer import make_optimizer
from octo_like.training.train_program import build_program, optimizer_config

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "octo15")
RECIPE = "finetune_config"
STEPS = 3
LOSS_RTOL, GRAD_RTOL, GRAD_FLOOR = 1e-6, 1e-5, 1e-3
ELEMENT_RTOL, OFF_TOTAL, OFF_TENSOR = 2e-5, 0.01, 0.25
PARAM_ULPS, PARAM_UPDATE_FRACTION = 2, 2.0**-6


@pytest.fixture(scope="module")
def recorded() -> dict[str, np.ndarray]:
    with np.load(os.path.join(FIXTURE, "finetune.npz")) as z:
        return {k: z[k] for k in z.files if k.startswith(RECIPE + "/")}


def _nested(arrays: dict[str, np.ndarray], prefix: str) -> dict:
    tree: dict = {}
    for key, value in arrays.items():
        if key.startswith(prefix):
            *parents, leaf = key[len(prefix) :].split("/")
            node = tree
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = value
    return tree


def _ours(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """{octo_like path: array} of the recorded Octo tree under `prefix` (T5 never recorded)."""
    out = {}
    for key, value in arrays.items():
        if key.startswith(prefix):
            path, reshape = target_path(key[len(prefix) :])
            out[path] = np.asarray(reshape(value), np.float32)
    return out


@pytest.fixture(scope="module")
def octo_init() -> dict[str, np.ndarray]:
    """The recipe's initial parameters: octo_tiny's, bit for bit (the fixture asserts it)."""
    _, tree = read_octo_params(os.path.join(FIXTURE, "octo_tiny"))
    flat = {k: v for k, v in flatten(tree).items() if "hf_model" not in k}
    return {
        target_path(k)[0]: np.asarray(target_path(k)[1](v), np.float32) for k, v in flat.items()
    }


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("octo_steps") / "converted")
    convert_octo(os.path.join(FIXTURE, "octo_tiny"), os.path.join(FIXTURE, "tiny_t5"), out)
    return out


def recipe_config(pretrained: str, **changes):
    """configs/finetune_octo.py:full,multimodal on the converted fixture; `changes` switch
    optimizer keys (``optimizer__b2=0.95``) or the head's loss scale back."""
    config = finetune_octo.get_config("full,multimodal")
    config.pretrained_path = pretrained
    config.dataset.name = "bridge_dataset"  # named for the parser; the batches are Octo's
    config.dataset.location = "unused"
    config.data.batch_size = 4
    for key, value in changes.items():
        section, name = key.split("__")
        if section == "head":
            config.model.head.kwargs = {name: value}
        else:
            setattr(config[section], name, value)
    return parse_finetune_config(config, "unused")


def octo_batch(model: OctoModel, arrays: dict, step: int, draws: bool = True) -> dict:
    """Octo's recorded batch of `step` as the network reads it, with Octo's draws."""
    prefix = f"{RECIPE}/step{step}/"
    observation = _nested(arrays, prefix + "batch/observation/")
    task = _nested(arrays, prefix + "batch/task/")
    observation, task = model.network_inputs(observation, task)
    batch = {
        "observation": observation,
        "task": task,
        "action": arrays[prefix + "batch/action"],
        "action_pad_mask": arrays[prefix + "batch/action_pad_mask"],
    }
    if draws:
        time = arrays[prefix + "draws/diffusion_time"]  # int32[1, b, w, 1]
        noise = arrays[prefix + "draws/diffusion_noise"]  # float32[1, b, w, H*A]
        batch["head_draws"] = {"time": time[0, ..., 0], "noise": noise[0]}
    return batch


@dataclasses.dataclass
class Run:
    """The program's losses, gradient norms and parameters after each step; the step-0
    gradients of the same loss; the first batch as the network read it."""

    losses: list
    grad_norms: list
    params: list
    grads: dict
    batch: dict


def run_steps(pretrained: str, arrays: dict, **changes) -> Run:
    """This project's fine-tuning program, 3 steps on Octo's batches and draws."""
    config, source = recipe_config(pretrained, **changes)
    loaded = OctoModel.load_pretrained(pretrained)
    example = octo_batch(loaded, arrays, 0, draws=False)
    initializer = PretrainedInitializer(source, config.model, echo=lambda _: None)
    initial = initializer(example, jax.random.key(config.seed), loaded.dataset_statistics)
    mesh = sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])
    module = initial.model.module
    program = build_program(config, module, mesh, jax.random.key(1), extra_frozen=initial.frozen)
    first = octo_batch(initial.model, arrays, 0)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    loss = lambda p: nnx.merge(graphdef, p, rest).loss(first, rng=jax.random.key(2))[0]  # noqa: E731
    grads = flat(jax.grad(loss)(params))
    state, losses, norms, after = program.state, [], [], []
    for step in range(STEPS):
        state, metrics = program.train_step(state, octo_batch(initial.model, arrays, step))
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
        after.append(flat(jax.device_get(state.params)))
    return Run(losses, norms, after, grads, first)


def flat(tree) -> dict[str, np.ndarray]:
    paths = jax.tree.leaves(masks.path_strings(tree))
    return dict(zip(paths, [np.asarray(x) for x in jax.tree.leaves(tree)], strict=True))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def noise_gradients(recorded: dict) -> set[str]:
    """Tensors whose step-0 gradient is below GRAD_FLOOR of the global norm in Octo's run: the
    stems' conv biases before a one-channel GroupNorm and the attention key biases, whose
    gradients are zero in exact arithmetic."""
    grads = _ours(recorded, f"{RECIPE}/step0/grads/")
    total = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in grads.values()))
    return {
        p for p, g in grads.items() if np.linalg.norm(g.astype(np.float64)) < GRAD_FLOOR * total
    }


def octo_params_after(octo_init: dict, arrays: dict, step: int) -> dict[str, np.ndarray]:
    """Octo's parameters after `step`: optax.apply_updates, (p + u).astype(float32), of the
    recorded updates (step 0's rate is 0: no change), as the fixture asserts bit for bit."""
    params = dict(octo_init)
    for s in range(1, step + 1):
        updates = _ours(arrays, f"{RECIPE}/step{s}/updates/")
        params = {p: (v + updates[p]).astype(np.float32) if p in updates else v
                  for p, v in params.items()}  # fmt: skip
    return params


@pytest.fixture(scope="module")
def octo_recipe(pretrained, recorded) -> Run:
    return run_steps(pretrained, recorded)


def test_loss_and_gradients_equal_octos(octo_recipe, recorded):
    for step in range(STEPS):
        want = float(recorded[f"{RECIPE}/step{step}/loss"])
        assert octo_recipe.losses[step] == pytest.approx(want, rel=LOSS_RTOL), step
        want = float(recorded[f"{RECIPE}/step{step}/grad_norm_trainable"])
        assert octo_recipe.grad_norms[step] == pytest.approx(want, rel=LOSS_RTOL), step
    octo_grads = _ours(recorded, f"{RECIPE}/step0/grads/")
    total = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in octo_grads.values()))
    errors = {}
    for path, want in octo_grads.items():
        scale = max(np.linalg.norm(want.astype(np.float64)), GRAD_FLOOR * total)
        errors[path] = np.linalg.norm(octo_recipe.grads[path].astype(np.float64) - want) / scale
    assert max(errors.values()) <= GRAD_RTOL, sorted(errors.items(), key=lambda e: -e[1])[:5]


def test_parameters_after_each_step_equal_octos(octo_recipe, recorded, octo_init):
    """The whole program (clip, optimizer, frozen T5, schedule) against Octo's parameters;
    not where the gradient is zero in exact arithmetic (rounding noise in both programs, whose
    Adam steps then take the noise's sign: `noise_gradients`)."""
    t5 = [p for p in octo_recipe.params[0] if p.startswith("language_encoder/")]
    assert t5 and all(
        np.array_equal(octo_recipe.params[2][p], octo_recipe.params[0][p]) for p in t5
    )
    noise = noise_gradients(recorded)
    assert noise and all(
        re.search(r"encoder/convs/\d+/bias$|attention/key/bias$", p) for p in noise
    )
    for step in range(STEPS):
        want = octo_params_after(octo_init, recorded, step)
        before = octo_params_after(octo_init, recorded, step - 1) if step else want
        got = octo_recipe.params[step]
        for path, value in want.items():
            if path in noise:
                continue
            update = np.max(np.abs(value.astype(np.float64) - before[path]))
            bound = PARAM_ULPS * np.spacing(np.abs(value)) + PARAM_UPDATE_FRACTION * update
            error = np.abs(got[path].astype(np.float64) - value)
            assert np.all(error <= bound), (step, path, float(np.max(error - bound)))


def optimizer_update_errors(config, recorded, octo_init) -> dict[str, float]:
    """The recipe's optimizer alone, fed Octo's recorded gradients of the 3 steps: per step and
    tensor, the fraction of update elements further than ELEMENT_RTOL (relative) from Octo's,
    and ``"largest step-0 update"`` (its rate is 0, so 0 is expected)."""
    grads = [_ours(recorded, f"{RECIPE}/step{s}/grads/") for s in range(STEPS)]
    params = {p: octo_init[p] for p in grads[0]}
    opt = dataclasses.replace(optimizer_config(config), frozen=())  # trainable tensors only
    tx, _ = make_optimizer(opt, params, config.num_steps)
    state, off = tx.init(params), {}
    for step in range(STEPS):
        updates, state = tx.update(grads[step], state, params)
        params = {p: params[p] + updates[p] for p in params}
        if step == 0:
            largest = max(float(np.max(np.abs(np.asarray(u)))) for u in updates.values())
            off["largest step-0 update"] = largest
            continue
        want = _ours(recorded, f"{RECIPE}/step{step}/updates/")
        for path, value in want.items():
            error = np.abs(np.asarray(updates[path], np.float64) - value)
            off[f"{step}:{path}"] = float(np.mean(error > ELEMENT_RTOL * np.abs(value)))
    return off


def far_from_octo(off: dict[str, float]) -> list[str]:
    """What breaks the equality: a non-zero step-0 update, more than OFF_TOTAL of all update
    elements off, or more than OFF_TENSOR of one tensor's."""
    found = [k for k, v in off.items() if k.startswith("largest") and v != 0.0]
    fractions = {k: v for k, v in off.items() if not k.startswith("largest")}
    if np.mean(list(fractions.values())) > OFF_TOTAL:  # tensors weigh equally: a bound
        found.append(f"{np.mean(list(fractions.values())):.3f} of the elements")
    found += [f"{k} ({v:.2f} off)" for k, v in fractions.items() if v > OFF_TENSOR]
    return found


def test_the_optimizer_fed_octos_gradients_makes_octos_updates(pretrained, recorded, octo_init):
    """Clip, bfloat16 first moment, b2, the kernel decay mask and the schedule's first rates
    (0, 1.5e-7, 3e-7), compared without the model in between."""
    config, _ = recipe_config(pretrained)
    assert not far_from_octo(optimizer_update_errors(config, recorded, octo_init))


def test_kernel_decay_rule_is_octos_on_the_converted_layout(octo_init):
    """Octo decays paths containing `kernel` on ITS tree; the rule on the converted paths
    selects the same parameters (the diffusion head's 1-D Fourier frequencies included, which
    this project's default shape rule leaves out)."""
    _, tree = read_octo_params(os.path.join(FIXTURE, "octo_tiny"))
    octo = {k for k in flatten(tree) if "hf_model" not in k}
    theirs = {target_path(k)[0]: "kernel" in k for k in octo}
    rule = flat(masks.weight_decay_mask(octo_init, "kernel"))
    assert rule == theirs
    shape_rule = flat(masks.weight_decay_mask(octo_init, "shape"))
    assert shape_rule != theirs


SWITCHED_BACK = {
    "b2 0.95": dict(optimizer__b2=0.95),
    "float32 first moment": dict(optimizer__mu_dtype=None),
    "shape weight-decay rule": dict(optimizer__weight_decay_rule="shape"),
    "250 warm-up steps": dict(optimizer__warmup_steps=250),
    "no clip": dict(optimizer__clip_gradient_norm=None),
}


@pytest.mark.parametrize("item", sorted(SWITCHED_BACK))
def test_switching_an_optimizer_item_back_breaks_the_equality(
    pretrained, recorded, octo_init, item
):
    config, _ = recipe_config(pretrained, **SWITCHED_BACK[item])
    assert far_from_octo(optimizer_update_errors(config, recorded, octo_init)), item


def test_switching_the_loss_scale_back_breaks_the_equality(pretrained, recorded):
    """The mean loss is 1/A of Octo's, and so are its gradients until the clip binds."""
    config, source = recipe_config(pretrained, head__loss_scale="mean")
    loaded = OctoModel.load_pretrained(pretrained)
    initial = PretrainedInitializer(source, config.model, echo=lambda _: None)(
        octo_batch(loaded, recorded, 0, draws=False), jax.random.key(0), loaded.dataset_statistics
    )
    batch = octo_batch(initial.model, recorded, 0)
    loss, _ = initial.model.module.loss(batch, rng=jax.random.key(2))
    want = float(recorded[f"{RECIPE}/step0/loss"])
    assert float(loss) == pytest.approx(want / 7, rel=LOSS_RTOL)
    assert float(loss) != pytest.approx(want, rel=LOSS_RTOL)
