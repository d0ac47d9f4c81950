"""Replays Octo's recorded fine-tuning steps (tests/fixtures/octo15/finetune.npz, made by
make_finetune_fixture.py from Octo's own code) through this project's fine-tuning program.

A recipe names the config entry of configs/finetune_octo.py, how Octo's draws become the batch's
``head_draws``, and where its initial parameters come from. The arrays are Octo's, keyed
``<recipe>/step{i}/...``; `ours` maps Octo's parameter paths onto the converted layout.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from configs import finetune_octo
from octo_like.model.base_checkpoint import fill, flat_params
from octo_like.model.octo_import.convert import read_octo_params
from octo_like.model.octo_import.params import flatten, target_path
from octo_like.model.octo_model import OctoModel
from octo_like.training.finetuning.finetune import PretrainedInitializer
from octo_like.training.finetuning.finetune_config import parse_finetune_config
from octo_like.training.optim.optimizer import make_optimizer
from octo_like.training.parallel import sharding
from octo_like.training.run.train_program import build_program, optimizer_config

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "octo15")
STEPS = 3


@dataclasses.dataclass(frozen=True)
class Recipe:
    """name: the fixture's recipe; entry: configs/finetune_octo.py's argument; dataset: a name
    the config knows (the batches are Octo's, no data is read); draws: Octo's draw name -> the
    `head_draws` key and how to reshape it; action_dim: for the loss scale."""

    name: str
    entry: str
    dataset: str
    draws: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]
    action_dim: int


RECIPES = {
    "finetune_config": Recipe(
        "finetune_config",
        "full,multimodal",
        "bridge_dataset",
        {
            "diffusion_time": ("time", lambda t: t[0, ..., 0]),  # int32[1, b, w, 1]
            "diffusion_noise": ("noise", lambda n: n[0]),  # float32[1, b, w, H*A]
        },
        7,
    ),
    "example02": Recipe(
        "example02",
        "example02",
        "my_robot",
        {  # MAP head dropout keep masks, bool[b*w, 1, features]
            "dropout0": ("map_dropout_hidden", lambda m: m),
            "dropout1": ("map_dropout_out", lambda m: m),
        },
        14,
    ),
}


def load(recipe: Recipe) -> dict[str, np.ndarray]:
    with np.load(os.path.join(FIXTURE, "finetune.npz")) as z:
        return {k: z[k] for k in z.files if k.startswith(recipe.name + "/")}


def nested(arrays: dict[str, np.ndarray], prefix: str) -> dict:
    tree: dict = {}
    for key, value in arrays.items():
        if key.startswith(prefix):
            *parents, leaf = key[len(prefix) :].split("/")
            node = tree
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = value
    return tree


def ours(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """{octo_like path: float32 array} of the recorded Octo tree under `prefix`."""
    out = {}
    for key, value in arrays.items():
        if key.startswith(prefix):
            path, reshape = target_path(key[len(prefix) :])
            out[path] = np.asarray(reshape(value), np.float32)
    return out


def octo_tiny_params() -> dict[str, np.ndarray]:
    """octo_tiny's parameters (not T5) on the converted layout: finetune_config's initial ones,
    bit for bit (the fixture asserts it)."""
    _, tree = read_octo_params(os.path.join(FIXTURE, "octo_tiny"))
    flat = {k: v for k, v in flatten(tree).items() if "hf_model" not in k}
    return {
        target_path(k)[0]: np.asarray(target_path(k)[1](v), np.float32) for k, v in flat.items()
    }


def initial_params(recipe: Recipe, arrays: dict) -> dict[str, np.ndarray]:
    recorded = ours(arrays, f"{recipe.name}/init/params/")
    return recorded or octo_tiny_params()


def recipe_config(recipe: Recipe, pretrained: str, **changes):
    """(TrainConfig, FinetuneSource) of the recipe on the converted fixture; `changes` switch
    items back: ``optimizer__b2=0.95``, ``head__loss_scale="mean"`` (merged into the kwargs)."""
    config = finetune_octo.get_config(recipe.entry)
    config.pretrained_path = pretrained
    config.dataset.name = recipe.dataset
    config.dataset.location = "unused"
    config.data.batch_size = 4
    for key, value in changes.items():
        section, name = key.split("__")
        if section == "head":
            config.model.head.kwargs = {**(config.model.head.kwargs or {}), name: value}
        else:
            setattr(config[section], name, value)
    return parse_finetune_config(config, "unused")


def octo_batch(recipe: Recipe, model: OctoModel, arrays: dict, step: int, draws: bool = True):
    """Octo's recorded batch of `step` as the network reads it, with Octo's draws."""
    prefix = f"{recipe.name}/step{step}/"
    observation = nested(arrays, prefix + "batch/observation/")
    task = nested(arrays, prefix + "batch/task/")
    observation, task = model.network_inputs(observation, task)
    batch = {
        "observation": observation,
        "task": task,
        "action": arrays[prefix + "batch/action"],
        "action_pad_mask": arrays[prefix + "batch/action_pad_mask"],
    }
    if draws:
        batch["head_draws"] = {
            key: reshape(arrays[prefix + f"draws/{name}"])
            for name, (key, reshape) in recipe.draws.items()
        }
    return batch


@dataclasses.dataclass
class Run:
    """The program's losses, gradient norms and parameters after each step, and the step-0
    gradients of the same loss (from the model the program trains)."""

    losses: list
    grad_norms: list
    params: list
    grads: dict


def initial_model(recipe: Recipe, pretrained: str, arrays: dict, config, source):
    """The fine-tuning model as `PretrainedInitializer` builds it, its new modules set to Octo's
    random initialization (merged ones are the pretrained weights: checked equal)."""
    loaded = OctoModel.load_pretrained(pretrained)
    example = octo_batch(recipe, loaded, arrays, 0, draws=False)
    initializer = PretrainedInitializer(source, config.model, echo=lambda _: None)
    initial = initializer(example, jax.random.key(config.seed), loaded.dataset_statistics)
    state = nnx.state(initial.model.module, nnx.Param)
    values = flat_params(state)
    octo = initial_params(recipe, arrays)
    for path in initializer.report.reused:
        if path in octo:
            np.testing.assert_array_equal(np.asarray(values[path]), octo[path], err_msg=path)
    missing = [p for p in values if p not in octo and not p.startswith("language_encoder/")]
    assert not missing, f"parameters Octo's fixture does not hold: {missing[:5]}"
    values.update({p: octo[p] for p in initializer.report.initialized})
    nnx.replace_by_pure_dict(state, fill(state, values))
    nnx.update(initial.model.module, state)
    return initial


def run_steps(recipe: Recipe, pretrained: str, arrays: dict, **changes) -> Run:
    """This project's fine-tuning program (`build_program`), 3 steps on Octo's batches and
    draws."""
    config, source = recipe_config(recipe, pretrained, **changes)
    initial = initial_model(recipe, pretrained, arrays, config, source)
    mesh = sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])
    module = initial.model.module
    program = build_program(config, module, mesh, jax.random.key(1), extra_frozen=initial.frozen)
    first = octo_batch(recipe, initial.model, arrays, 0)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    loss = lambda p, b: nnx.merge(graphdef, p, rest).loss(b, rng=jax.random.key(2))[0]  # noqa: E731
    grads = flat(jax.jit(jax.grad(loss))(params, first))
    state, losses, norms, after = program.state, [], [], []
    for step in range(STEPS):
        batch = octo_batch(recipe, initial.model, arrays, step)
        state, metrics = program.train_step(state, batch)
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
        after.append(flat(jax.device_get(state.params)))
    return Run(losses, norms, after, grads)


def first_loss(recipe: Recipe, pretrained: str, arrays: dict, **changes) -> float:
    """The step-0 loss of the recipe with `changes`, from the model alone."""
    config, source = recipe_config(recipe, pretrained, **changes)
    initial = initial_model(recipe, pretrained, arrays, config, source)
    batch = octo_batch(recipe, initial.model, arrays, 0)
    graphdef, state = nnx.split(initial.model.module)
    loss = jax.jit(lambda s, b: nnx.merge(graphdef, s).loss(b, rng=jax.random.key(2))[0])
    return float(loss(state, batch))


def flat(tree) -> dict[str, np.ndarray]:
    """`flat_params` as numpy arrays (compared in float64 on the host)."""
    return {path: np.asarray(leaf) for path, leaf in flat_params(tree).items()}


def octo_params_after(recipe: Recipe, init: dict, arrays: dict, step: int) -> dict:
    """Octo's parameters after `step`: optax.apply_updates, (p + u).astype(float32), of the
    recorded updates (step 0's rate is 0: no change), as the fixture asserts bit for bit."""
    params = dict(init)
    for s in range(1, step + 1):
        updates = ours(arrays, f"{recipe.name}/step{s}/updates/")
        params = {p: (v + updates[p]).astype(np.float32) if p in updates else v
                  for p, v in params.items()}  # fmt: skip
    return params


def optimizer_updates(recipe: Recipe, config, arrays: dict, init: dict) -> list[dict]:
    """The recipe's optimizer alone (as `build_program` configures it), fed Octo's recorded
    trainable gradients of the 3 steps: its updates per step."""
    grads = [ours(arrays, f"{recipe.name}/step{s}/grads/") for s in range(STEPS)]
    params = {p: init[p] for p in grads[0]}
    opt = dataclasses.replace(optimizer_config(config), frozen=())  # trainable tensors only
    tx, _ = make_optimizer(opt, params, config.num_steps)
    # Eagerly, as Octo's fixture ran: jitted, XLA may keep optax's bfloat16 product `b1 * mu`
    # in float32 (its default excess precision), which moves an update by up to ~2^-8.
    state, out = tx.init(params), []
    for step in range(STEPS):
        updates, state = tx.update(grads[step], state, params)
        params = {p: params[p] + updates[p] for p in params}
        out.append({p: np.asarray(u) for p, u in updates.items()})
    return out
