"""Octo's two fine-tuning recipes (configs/finetune_octo.py) take the steps Octo's own code
takes: 3 train steps of scripts/finetune.py with the optimizer `create_optimizer` builds from
scripts/configs/finetune_config.py (recipe ``finetune_config``), and of examples/02's new L1
head with attention pooling, per-dimension proprio tokens and its `optax.adamw` (``example02``),
run by Octo in its pinned environment on the tiny Octo-1.5 fixture (tests/fixtures/octo15/
finetune.npz, made by make_finetune_fixture.py: the batches, every random draw (the diffusion
head's times and noises; the MAP head's dropout masks), the new modules' initial weights, and
per step the loss, the gradients and the updates), replayed through this project's fine-tuning
program (`PretrainedInitializer` + `build_program`, as finetune.py runs them) from the converted
checkpoint (tests/training/octo_replay.py). Switching any recipe item back to this project's
default breaks the equality, which the tests below check.

Tolerances (float32, CPU), from measurements on ``finetune_config`` (``example02`` holds the
same bounds). Moving every weight by a relative +1e-6 moves the step-0 loss by 3.2e-6 relative
and the gradients by 1.5e-5 of their global norm (2.1e-5 of a tensor's at most); Octo's and
this program's differ by at most 2.3e-7 (loss), 2.5e-7 (gradient norm) and 2.7e-6 per tensor
(gradients). Hence:
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
  the tensor's largest update of the step. The updates are 1e-7-size steps on ~0.1-size weights
  (a few ulps). The program is jitted, Octo's recording was not: optax computes `b1 * mu` in
  bfloat16 (a weak-typed float times the bfloat16 moment), which XLA may keep in float32 (its
  default `xla_allow_excess_precision`), moving an update by up to ~2^-8 relative (measured:
  ~1e-3; with `--xla_allow_excess_precision=false` the jitted optimizer gives Octo's eager
  updates); a jitted Octo run on an accelerator has the same freedom.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from octo_like.model.octo_import.convert import convert_octo, read_octo_params
from octo_like.model.octo_import.params import flatten, target_path
from octo_like.training.optim import masks
from tests.training import octo_replay as replay
from tests.training.octo_replay import RECIPES, STEPS

LOSS_RTOL, GRAD_RTOL, GRAD_FLOOR = 1e-6, 1e-5, 1e-3
ELEMENT_RTOL, OFF_TOTAL, OFF_TENSOR = 2e-5, 0.01, 0.25
PARAM_ULPS, PARAM_UPDATE_FRACTION = 2, 2.0**-6


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("octo_steps") / "converted")
    fixture = replay.FIXTURE
    convert_octo(f"{fixture}/octo_tiny", f"{fixture}/tiny_t5", out)
    return out


@pytest.fixture(scope="module", params=sorted(RECIPES))
def recipe(request):
    return RECIPES[request.param]


_CACHE: dict = {}


def cached(key, make):
    """Module-level memo: a recipe's arrays and run are shared by its tests."""
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


@pytest.fixture
def arrays(recipe) -> dict[str, np.ndarray]:
    return cached(("arrays", recipe.name), lambda: replay.load(recipe))


@pytest.fixture
def init(recipe, arrays) -> dict[str, np.ndarray]:
    return cached(("init", recipe.name), lambda: replay.initial_params(recipe, arrays))


@pytest.fixture
def run(recipe, pretrained, arrays) -> replay.Run:
    return cached(("run", recipe.name), lambda: replay.run_steps(recipe, pretrained, arrays))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def global_norm(tree: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in tree.values())))


def test_loss_and_gradients_equal_octos(recipe, run, arrays):
    for step in range(STEPS):
        want = float(arrays[f"{recipe.name}/step{step}/loss"])
        assert run.losses[step] == pytest.approx(want, rel=LOSS_RTOL), step
        want = float(arrays[f"{recipe.name}/step{step}/grad_norm_trainable"])
        assert run.grad_norms[step] == pytest.approx(want, rel=LOSS_RTOL), step
    octo_grads = replay.ours(arrays, f"{recipe.name}/step0/grads/")
    assert set(octo_grads) == {p for p in run.grads if not p.startswith("language_encoder/")}
    total, errors = global_norm(octo_grads), {}
    for path, want in octo_grads.items():
        scale = max(np.linalg.norm(want.astype(np.float64)), GRAD_FLOOR * total)
        errors[path] = np.linalg.norm(run.grads[path].astype(np.float64) - want) / scale
    assert max(errors.values()) <= GRAD_RTOL, sorted(errors.items(), key=lambda e: -e[1])[:5]


def noise_gradients(recipe, arrays: dict) -> set[str]:
    """Tensors whose step-0 gradient is below GRAD_FLOOR of the global norm in Octo's run: the
    stems' conv biases before a one-channel GroupNorm, the attention key biases, and the MAP
    head's probe, query and key (its softmax over one readout token is constant), whose
    gradients are zero in exact arithmetic."""
    grads = replay.ours(arrays, f"{recipe.name}/step0/grads/")
    total = global_norm(grads)
    return {
        p for p, g in grads.items() if np.linalg.norm(g.astype(np.float64)) < GRAD_FLOOR * total
    }


def test_parameters_after_each_step_equal_octos(recipe, run, arrays, init):
    """The whole program (clip, optimizer, frozen T5, schedule) against Octo's parameters;
    not where the gradient is zero in exact arithmetic (rounding noise in both programs, whose
    Adam steps then take the noise's sign: `noise_gradients`)."""
    t5 = [p for p in run.params[0] if p.startswith("language_encoder/")]
    assert t5 and all(np.array_equal(run.params[2][p], run.params[0][p]) for p in t5)
    noise = noise_gradients(recipe, arrays)
    expected = (
        r"encoder/convs/\d+/bias$|attention/key/bias$|map_head/(probe|attention/(query|key)/)"
    )
    assert all(re.search(expected, p) for p in noise), sorted(noise)
    for step in range(STEPS):
        want = replay.octo_params_after(recipe, init, arrays, step)
        before = replay.octo_params_after(recipe, init, arrays, step - 1) if step else want
        got = run.params[step]
        for path, value in want.items():
            if path in noise:
                continue
            update = np.max(np.abs(value.astype(np.float64) - before[path]))
            bound = PARAM_ULPS * np.spacing(np.abs(value)) + PARAM_UPDATE_FRACTION * update
            error = np.abs(got[path].astype(np.float64) - value)
            assert np.all(error <= bound), (step, path, float(np.max(error - bound)))


def far_from_octo(recipe, updates: list[dict], arrays: dict) -> list[str]:
    """What breaks the optimizer's equality: a non-zero step-0 update (its rate is 0), more
    than OFF_TOTAL of all later update elements further than ELEMENT_RTOL from Octo's, or more
    than OFF_TENSOR of one tensor's."""
    found = [f"0:{p}" for p, u in updates[0].items() if np.any(u)]
    fractions = {}
    for step in range(1, STEPS):
        want = replay.ours(arrays, f"{recipe.name}/step{step}/updates/")
        for path, value in want.items():
            error = np.abs(updates[step][path].astype(np.float64) - value)
            fractions[f"{step}:{path}"] = float(np.mean(error > ELEMENT_RTOL * np.abs(value)))
    if np.mean(list(fractions.values())) > OFF_TOTAL:  # tensors weigh equally: a bound
        found.append(f"{np.mean(list(fractions.values())):.3f} of the elements")
    return found + [f"{k} ({v:.2f} off)" for k, v in fractions.items() if v > OFF_TENSOR]


def test_the_optimizer_fed_octos_gradients_makes_octos_updates(recipe, pretrained, arrays, init):
    """Clip, first-moment dtype, b2, the decay mask and the schedule's first rates (0, then
    1.5e-7 and 3e-7; example02: 3e-7 and 6e-7), compared without the model in between."""
    config, _ = replay.recipe_config(recipe, pretrained)
    updates = replay.optimizer_updates(recipe, config, arrays, init)
    assert not far_from_octo(recipe, updates, arrays)


def test_kernel_decay_rule_is_octos_on_the_converted_layout():
    """Octo decays paths containing `kernel` on ITS tree; the rule on the converted paths
    selects the same parameters (the diffusion head's 1-D Fourier frequencies included, which
    this project's default shape rule leaves out)."""
    _, tree = read_octo_params(f"{replay.FIXTURE}/octo_tiny")
    octo = {k for k in flatten(tree) if "hf_model" not in k}
    theirs = {target_path(k)[0]: "kernel" in k for k in octo}
    params = replay.octo_tiny_params()
    assert replay.flat(masks.weight_decay_mask(params, "kernel")) == theirs
    assert replay.flat(masks.weight_decay_mask(params, "shape")) != theirs


SWITCHED_BACK = {
    "finetune_config": {
        "b2 0.95": dict(optimizer__b2=0.95),
        "float32 first moment": dict(optimizer__mu_dtype=None),
        "shape weight-decay rule": dict(optimizer__weight_decay_rule="shape"),
        "250 warm-up steps": dict(optimizer__warmup_steps=250),
        "no clip": dict(optimizer__clip_gradient_norm=None),
    },
    "example02": {
        "b2 0.95": dict(optimizer__b2=0.95),
        "shape weight-decay rule": dict(optimizer__weight_decay_rule="shape"),
        "clip at 1.0": dict(optimizer__clip_gradient_norm=1.0),
        "250 warm-up steps": dict(optimizer__warmup_steps=250),
    },
}
CASES = [(name, item) for name, items in SWITCHED_BACK.items() for item in sorted(items)]


@pytest.mark.parametrize(("name", "item"), CASES)
def test_switching_an_optimizer_item_back_breaks_the_equality(pretrained, name, item):
    recipe = RECIPES[name]
    arrays = cached(("arrays", name), lambda: replay.load(recipe))
    init = cached(("init", name), lambda: replay.initial_params(recipe, arrays))
    config, _ = replay.recipe_config(recipe, pretrained, **SWITCHED_BACK[name][item])
    updates = replay.optimizer_updates(recipe, config, arrays, init)
    assert far_from_octo(recipe, updates, arrays), item


def test_switching_the_loss_scale_back_breaks_the_equality(recipe, pretrained, arrays):
    """The mean loss is 1/A of Octo's (and so are its gradients until a clip binds)."""
    loss = replay.first_loss(recipe, pretrained, arrays, head__loss_scale="mean")
    want = float(arrays[f"{recipe.name}/step0/loss"])
    assert loss == pytest.approx(want / recipe.action_dim, rel=LOSS_RTOL)


def test_mean_pooling_instead_of_octos_attention_pooling_breaks_the_equality(pretrained):
    """examples/02's L1 head pools the readouts with attention (`use_map`)."""
    recipe = RECIPES["example02"]
    arrays = cached(("arrays", recipe.name), lambda: replay.load(recipe))
    want = float(arrays[f"{recipe.name}/step0/loss"])
    assert replay.first_loss(recipe, pretrained, arrays) == pytest.approx(want, rel=LOSS_RTOL)
    loss = replay.first_loss(recipe, pretrained, arrays, head__use_map=False)
    assert loss != pytest.approx(want, rel=1e-3)


def test_the_model_changes_against_the_pretrained_config_are_logged(pretrained, caplog):
    """As Octo's check_config_diff: the run names every model key it changes."""
    caplog.set_level("INFO", logger="octo_like.training.finetuning.finetune_config")
    replay.recipe_config(RECIPES["example02"], pretrained)
    messages = [r.getMessage() for r in caplog.records]
    (message,) = [m for m in messages if "differs from the pretrained" in m]
    for change in ("model.head.kind: 'diffusion' -> 'l1'", "model.action_horizon: 4 -> 50",
                   "model.window: 2 -> 1", "model.proprio: None -> "):  # fmt: skip
        assert change in message, message


def test_head_kwargs_from_the_command_line_update_the_pretrained_heads(pretrained):
    """`--config.model.head.kwargs="{'loss_scale': 'action_dim'}"` (how a benchmark arm or a
    user switches one recipe item) keeps every other pretrained head setting."""
    import finetune

    argv = ["finetune.py", "--config", "configs/finetune.py:full,language", "--workdir", "unused",
            "--config.model.head.kwargs={'loss_scale': 'action_dim'}"]  # fmt: skip
    config = finetune.parse_command_line(argv)[0]
    config.pretrained_path = pretrained
    config.dataset.name, config.dataset.location = "bridge_dataset", "unused"
    typed, _ = replay.parse_finetune_config(config, "unused")
    kwargs = dict(typed.model.head.kwargs)
    assert kwargs["loss_scale"] == "action_dim"
    assert kwargs["time_input"] == "step" and kwargs["sampler"] == "octo"  # Octo's, inherited
