"""`OctoModel`: the network with everything needed to use it — config, parameters, dataset
statistics, input spec and text tokenizer — saved to and loaded from one checkpoint directory.

    model = OctoModel.load_pretrained("runs/pretrain/checkpoints")
    tasks = model.create_tasks(texts=["put the cup in the sink"])  # or one str: batch 1
    statistics = model.dataset_statistics["bridge_dataset"]["action"]  # robot units
    # one dataset: also Octo's flat model.dataset_statistics["action"]
    actions = model.sample_actions(observations, tasks, statistics, rng=jax.random.key(0))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from octo_like.model import call_checks, model_checkpoint, model_inputs, octo_inputs
from octo_like.model import input_spec as spec_lib
from octo_like.model.config import ModelConfig
from octo_like.model.language import TextTokenizer, load_t5_encoder
from octo_like.model.lora import merge_adapters
from octo_like.model.octo_module import OctoModule
from octo_like.model.one_shot import run_once
from octo_like.model.random_draws import draw_together
from octo_like.model.tokens import TokenGroup
from octo_like.normalization import ArrayStatistics, NormalizationType, unnormalize_np

# OctoModel.dataset_statistics is traversed by jax.tree like the plain dict it subclasses (a
# dict subclass is otherwise one leaf), e.g. Octo's jax.tree.map(np.array, statistics).
jax.tree_util.register_pytree_with_keys(
    octo_inputs.StatisticsByDataset,
    lambda s: ([(jax.tree_util.DictKey(k), s[k]) for k in sorted(s)], tuple(sorted(s))),
    lambda keys, values: octo_inputs.StatisticsByDataset(zip(keys, values, strict=True)),
)


def action_statistics_entry(
    statistics: Mapping[str, Any],
    normalization: str,
    action_mask: Sequence[bool] | None,
) -> dict[str, Any]:
    """What a checkpoint keeps per dataset to map normalized actions back to robot units."""
    return {
        "statistics": dict(statistics),
        "normalization": str(NormalizationType(normalization).value),
        "action_normalization_mask": None if action_mask is None else list(action_mask),
    }


def initialize(
    make: Callable[[jax.Array], nnx.Module],
    rng: jax.Array,
    sharding: Callable[[Any], Any] | None = None,
) -> nnx.Module:
    """``make(rng)``, its initializers run as one compiled program.

    Built eagerly, each of a model's ~100 initializers is compiled and run on its own (most of a
    small model's start-up); traced once, they are one XLA program, compiled once (or read from
    the compilation cache) and, with `sharding` (abstract parameters -> their shardings),
    written straight into their shardings. The values are the same random draws from `rng`.
    """
    graphdef = None

    def split(key: jax.Array):
        nonlocal graphdef  # static structure, the same for every trace
        graphdef, params, rest = nnx.split(make(key), nnx.Param, ...)
        return params, rest

    def states(key: jax.Array):
        params, rest = draw_together(split)(key)  # the same draws, compiled in far less time
        if sharding is not None:  # traced once: the layout is read off the traced shapes
            where = sharding(params)
            mesh = jax.tree.leaves(where)[0].mesh
            replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
            params = jax.lax.with_sharding_constraint(params, where)
            rest = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, replicated), rest)
        return params, rest

    params, rest = run_once(jax.jit(states), rng)  # compiled for its one run
    return nnx.merge(graphdef, params, rest)


def _module_factory(
    config: ModelConfig, example_batch: Mapping[str, Any]
) -> tuple[Callable[[jax.Array], OctoModule], dict, TextTokenizer | None]:
    """(key -> the module for `example_batch`, its input spec, the text tokenizer)."""
    tokenizer = model_checkpoint.text_tokenizer(config.language)
    example_batch = dict(example_batch)
    if tokenizer is not None and "language_tokens" not in example_batch.get("task", {}):
        example_batch["task"] = model_inputs.tokenize_tasks(example_batch["task"], tokenizer)
    spec = spec_lib.spec_from_batch(example_batch)
    vocab = tokenizer.vocab_size if tokenizer is not None else 0
    return lambda key: OctoModule(config, spec, vocab, rngs=nnx.Rngs(key)), spec, tokenizer


class OctoModel:
    """The policy network plus its config, input spec, dataset statistics and tokenizer."""

    def __init__(
        self,
        module: OctoModule,
        config: ModelConfig,
        input_spec: dict,
        dataset_statistics: dict[str, dict],
        text_tokenizer: TextTokenizer | None,
    ):
        self.module = module
        self.config = config
        self.input_spec = input_spec
        # Octo's keys too: dataset_statistics[NAME]["action"] (with its mask), and for one
        # dataset Octo's flat dataset_statistics["action"] (see `StatisticsByDataset`)
        self.dataset_statistics = octo_inputs.StatisticsByDataset(
            (name, octo_inputs.octo_statistics_view(entry))
            for name, entry in (dataset_statistics or {}).items()
        )
        self.text_tokenizer = text_tokenizer
        # Compiled programs and the module's split state, made on first use (splitting costs
        # ~10 ms a call even for a tiny model); `update_params` drops them with new weights.
        self._predict: dict | None = {}
        self._transformer = None

    # ---------------------------------------------------------------- creation
    @classmethod
    def from_config(
        cls,
        config: ModelConfig,
        example_batch: Mapping[str, Any],
        rng: jax.Array,
        dataset_statistics: dict[str, dict] | None = None,
        *,
        load_language_weights: bool = True,
        sharding: Callable[[Any], Any] | None = None,
    ) -> OctoModel:
        """A freshly initialized model; a pretrained T5 (if configured) is loaded from disk
        unless `load_language_weights` is False (fine-tuning copies it from the pretrained
        model's parameters instead: a checkpoint keeps T5's tokenizer and config, not a second
        copy of its weights).

        `sharding`: abstract parameters -> a tree of their shardings; every parameter is then
        created where it lives (FSDP may span hosts: no host holds the whole model), the other
        state replicated. Without it, parameters land on the default device.
        """
        make, spec, tokenizer = _module_factory(config, example_batch)
        module = initialize(make, rng, sharding)
        if config.language.encoder == "t5" and load_language_weights:
            pretrained, _ = load_t5_encoder(config.language.checkpoint_dir)
            nnx.update(module.language_encoder, nnx.state(pretrained, nnx.Param))
        return cls(module, config, spec, dict(dataset_statistics or {}), tokenizer)

    @staticmethod
    def abstract_module(config: ModelConfig, example_batch: Mapping[str, Any]) -> OctoModule:
        """The module `from_config` builds for `example_batch`, its arrays
        `jax.ShapeDtypeStruct`s (nothing is computed): a train step can be compiled for it
        while the real weights are initialized."""
        make, _, _ = _module_factory(config, example_batch)
        return nnx.eval_shape(lambda: make(jax.random.key(0)))

    # ---------------------------------------------------------------- inputs
    def create_tasks(
        self,
        texts: Sequence[str] | str | None = None,
        goals: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """Task dict for a batch: tokenized `texts` and/or goal images ``{camera: uint8[b,h,w,3]}``
        (Octo's image keys ``image_primary`` too; other keys, e.g. a goal ``proprio``, are not
        read). One str is one task (batch 1), as in Octo.

        A missing modality is zero-filled and masked out (pad_mask_dict False).
        """
        return model_inputs.create_tasks(self.input_spec, self.text_tokenizer, texts, goals)

    def get_pretty_spec(self) -> str:
        """What `sample_actions` expects, and what the model predicts."""
        head = self.config.head
        return (
            spec_lib.pretty(self.input_spec)
            + f"\naction head: {head.kind}, chunk [{self.config.action_horizon}, "
            f"{self.config.action_dim}], window {self.config.window}\n"
            + f"datasets: {', '.join(sorted(self.dataset_statistics)) or '(none)'}"
        )

    @property
    def example_batch(self) -> dict[str, Any]:
        """Zeros of the input spec's shapes and dtypes (masks True), batch 1 (Octo's
        `example_batch`)."""
        return model_inputs.example_batch(self.input_spec)

    # ---------------------------------------------------------------- inference
    def sample_actions(
        self,
        observations: Mapping[str, Any],
        tasks: Mapping[str, Any],
        unnormalization_statistics: Mapping[str, Any] | None = None,
        normalization_type: str | None = None,
        timestep_pad_mask: Any = None,
        train: bool = False,
        argmax: bool = False,
        sample_shape: tuple[int, ...] = (),
        rng: jax.Array | None = None,
        temperature: float = 1.0,
        *,
        noise: tuple[Any, Any] | None = None,
    ) -> np.ndarray:
        """Action chunks float32[*sample_shape, b, H, A] for the last observation timestep.

        Octo's signature and semantics: normalized actions unless `unnormalization_statistics`
        is given, either Octo's bare form ``model.dataset_statistics[NAME]["action"]`` (its
        ``mask`` False dims, e.g. the gripper, stay as predicted; `normalization_type` "normal"
        (default) or "bounds") or a whole entry ``model.dataset_statistics[NAME]`` (its own
        normalization and mask). `timestep_pad_mask` bool[b, w] replaces the observations'.
        `noise` (octo_like): ``(x_init, step_noise)`` replays a diffusion chain (see
        `DiffusionActionHead.predict_action`). `argmax` and `temperature` apply to the discrete
        head (the default 1.0 keeps its configured temperature); the others refuse them.
        """
        call_checks.check_statistics_not_key(unnormalization_statistics)
        if rng is None:
            raise ValueError("sample_actions needs rng=jax.random.key(SEED): the head samples")
        call_checks.check_rng(rng)
        sample_shape = call_checks.check_sample_shape(sample_shape)
        call_checks.check_unnormalization_statistics(
            unnormalization_statistics, self.dataset_statistics
        )
        if train:
            raise ValueError("sample_actions(train=True): sampling with dropout is not supported")
        if (argmax or temperature != 1.0) and self.config.head.kind != "discrete":
            raise ValueError(
                f"argmax / temperature apply to a discrete head; this model's is "
                f"{self.config.head.kind!r}, which samples"
            )
        observations, tasks = self.network_inputs(observations, tasks, timestep_pad_mask)
        dims = model_inputs.embodiment_action_dim(unnormalization_statistics)
        # Octo's default temperature 1.0 leaves a discrete head's configured temperature.
        sampling = (bool(argmax), None if temperature == 1.0 else float(temperature))
        predict = self._predict_program(sample_shape, noise is not None, dims, sampling)
        actions = np.asarray(predict(self._state(), observations, tasks, rng, noise))
        return self._unnormalize(actions, unnormalization_statistics, normalization_type)

    def run_transformer(
        self,
        observations: Mapping[str, Any],
        tasks: Mapping[str, Any],
        timestep_pad_mask: Any = None,
        train: bool = False,
    ) -> dict[str, TokenGroup]:
        """Every token group's transformer outputs by Octo's names (``task_language``,
        ``obs_primary``, ``obs_task_language``, ``readout_action``, ...; plus ``task`` and
        ``obs``, the prefix and observation groups concatenated as Octo returns them), each a
        `TokenGroup` with ``.tokens`` float32[b, (w,) n, d] and ``.mask``."""
        if train:
            raise ValueError("run_transformer(train=True): dropout is not supported here")
        observations, tasks = self.network_inputs(observations, tasks, timestep_pad_mask)
        if self._transformer is None:
            graphdef, _ = nnx.split(self.module)

            @jax.jit
            def run(state, observations, tasks):
                module = nnx.merge(graphdef, state)
                return module.transformer_outputs(observations, tasks, train=False)

            self._transformer = run
        outputs = self._transformer(self._state(), observations, tasks)
        groups = {s.name: outputs[s.name] for s in self.module.group_specs}  # sequence order
        prefix = [g for n, g in groups.items() if n.startswith("task_")]
        if prefix:
            groups["task"] = TokenGroup(
                jax.numpy.concatenate([g.tokens for g in prefix], -2),
                jax.numpy.concatenate([g.mask for g in prefix], -1),
            )
        obs = [g for n, g in groups.items() if n.startswith("obs_")]
        groups["obs"] = TokenGroup(
            jax.numpy.concatenate([g.tokens for g in obs], -2),
            jax.numpy.concatenate([g.mask for g in obs], -1),
        )
        return groups

    def network_inputs(
        self, observations: Mapping[str, Any], tasks: Mapping[str, Any], timestep_pad_mask=None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(observations, tasks) as the network reads them, from octo_like's or Octo's
        dictionaries (see `octo_inputs`), checked against the input spec (any window up to
        max_horizon)."""
        return model_inputs.network_inputs(
            observations,
            tasks,
            timestep_pad_mask,
            config=self.config,
            input_spec=self.input_spec,
            text_tokenizer=self.text_tokenizer,
        )

    def update_params(self, params) -> None:
        """Replaces the weights (an `nnx.State` or pure dict of the module's parameters) and
        drops the split state kept for the compiled programs, so the next call uses them."""
        nnx.update(self.module, params)
        self._predict = None

    def _state(self):
        """The module's state, split once and kept with the compiled programs (`update_params`
        refreshes it)."""
        self._predict = {} if self._predict is None else self._predict
        if "state" not in self._predict:
            self._predict["state"] = nnx.split(self.module)[1]
        return self._predict["state"]

    def _predict_program(self, sample_shape: tuple[int, ...], with_noise: bool, dims, sampling):
        key = (tuple(sample_shape), with_noise, dims, sampling)
        self._predict = {} if self._predict is None else self._predict
        if key not in self._predict:
            graphdef, _ = nnx.split(self.module)

            @jax.jit
            def predict(state, observations, tasks, rng, noise):
                module = nnx.merge(graphdef, state)
                return module.predict_action(
                    observations,
                    tasks,
                    rng=rng,
                    sample_shape=sample_shape,
                    noise=noise,
                    embodiment_action_dim=dims,
                    argmax=sampling[0],
                    temperature=sampling[1],
                )

            self._predict[key] = predict
        return self._predict[key]

    def _unnormalize(self, actions: np.ndarray, given, normalization_type) -> np.ndarray:
        if not given:  # None (Octo) or {}: normalized
            return actions
        if "statistics" not in given:  # Octo's bare action statistics (with their own mask)
            kind = normalization_type or given.get("normalization", "normal")  # Octo: NORMAL
            return octo_inputs.bare_unnormalize(actions, given, kind)
        stats = ArrayStatistics.from_dict(given["statistics"]["action"])
        if actions.shape[-1] < stats.dim:
            raise ValueError(
                f"the model predicts {actions.shape[-1]} action dims but the statistics have "
                f"{stats.dim}: they belong to another robot"
            )
        # Dims past the dataset's are padding (max_action_dim): return the robot's dims only.
        return unnormalize_np(
            actions[..., : stats.dim],
            stats,
            normalization_type or given["normalization"],
            given.get("action_normalization_mask"),
        ).astype(np.float32)

    # ---------------------------------------------------------------- checkpoints
    def save_pretrained(self, step: int, checkpoint_dir: str, *, overwrite: bool = False) -> None:
        """Writes ``checkpoint_dir/<step>/{params,config,dataset_statistics,input_spec}``
        (a local path or a ``gs://`` URL, which orbax writes directly). An existing step is
        refused unless `overwrite` (then replaced whole, after the new one verified)."""
        model_checkpoint.save_model(self, step, checkpoint_dir, overwrite=overwrite)

    @classmethod
    def load_pretrained(
        cls,
        checkpoint_dir: str,
        step: int | None = None,
        *,
        sharding: jax.sharding.Sharding | Callable[[Any], Any] | None = None,
    ) -> OctoModel:
        """Loads a step (default: the latest) from a local path or a URL (``gs://`` read by
        orbax directly; other schemes copied to a temporary directory first).

        `sharding`: where the parameters are restored to, whatever topology saved them: one
        `Sharding` for every array, or a function from the abstract parameters (a pure dict of
        `jax.ShapeDtypeStruct`) to a matching tree of shardings, e.g. a training run's FSDP
        layout over a multi-host mesh. None: this process's first device (a notebook).

        The step's files are checked against its checksums first and the parameters must be
        finite: a corrupted checkpoint raises `CheckpointCorruptError` naming the item and array.
        """
        return model_checkpoint.load_model(cls, checkpoint_dir, step, sharding)


_text_tokenizer = model_checkpoint.text_tokenizer  # tests and from_config use it


def merge_lora(model: OctoModel) -> OctoModel:
    """An `OctoModel` without adapters computing the same function (for export / serving).

    Each adapted layer becomes a plain `precision.Linear` (`lora.merge_adapters`); the config's
    ``lora`` is cleared, so the merged model saves and loads as a plain checkpoint. Returns
    `model` itself when it has no adapters.
    """
    if model.config.lora is None:
        return model
    module = merge_adapters(model.module, model.config.lora.targets)
    config = dataclasses.replace(model.config, lora=None)
    module.config = config
    return OctoModel(
        module, config, model.input_spec, model.dataset_statistics, model.text_tokenizer
    )
