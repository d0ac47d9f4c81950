"""The policy network: tokenizers -> token groups -> block transformer -> readouts -> action head.

Task tokens form a prefix; each timestep holds one group per camera (and proprio) and the
`readout_action` tokens, whose transformer outputs condition the action head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from octo_like.model import precision
from octo_like.model.attention import accelerator_platform
from octo_like.model.block_transformer import BlockTransformer
from octo_like.model.config import ModelConfig
from octo_like.model.heads import ACTION_HEADS
from octo_like.model.language import SmallTextEncoder, T5Encoder, T5EncoderConfig
from octo_like.model.lora import apply_lora
from octo_like.model.tokenizers.image import ImageTokenizer
from octo_like.model.tokenizers.lowdim import ProprioTokenizer
from octo_like.model.tokens import OBS_PREFIX, GroupSpec, TokenGroup, default_rules
from octo_like.model.transformer import TRANSFORMER_PRESETS

READOUT = "readout_action"
LANGUAGE_GROUP = "task_language"


LANGUAGE_STREAM = 1  # fold_in index of the language encoder's dropout keys
_COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _positional(rngs: nnx.Rngs, shape) -> nnx.Param:
    return nnx.Param(jax.random.normal(rngs.params(), shape) * 0.02)


def language_width(config: ModelConfig) -> int:
    if config.language.encoder == "t5":
        return T5EncoderConfig.from_json(f"{config.language.checkpoint_dir}/config.json").d_model
    if config.language.encoder == "small":
        return config.language.small_width
    return 0


class OctoModule(nnx.Module):
    """Built from a `ModelConfig` and the input spec of an example batch (see input_spec.py)."""

    def __init__(
        self,
        config: ModelConfig,
        input_spec: Mapping,
        vocab_size: int,
        *,
        rngs: nnx.Rngs,
        platform: str = "",
    ):
        """`platform`: the one the program is compiled for ('cpu', 'tpu', 'cuda', 'rocm'), which
        resolves dtype and attention 'auto'; '' = JAX's default backend (this host's)."""
        self.config = config
        platform = platform or accelerator_platform()
        dtype_name = config.compute_dtype(platform)
        dt = self.dtype = _COMPUTE_DTYPES[dtype_name]
        transformer_config = dataclasses.replace(
            TRANSFORMER_PRESETS[config.transformer],
            dtype=dtype_name,
            remat=config.remat,
            scan_layers=config.scan_layers,
            attention=config.attention,
            platform=platform,
        )
        width = transformer_config.width
        horizon = config.max_horizon  # timestep embeddings are sliced to the batch's window
        observation_spec = input_spec["observation"]
        lang_width = language_width(config)

        if config.language.encoder == "t5":
            t5_config = T5EncoderConfig.from_json(f"{config.language.checkpoint_dir}/config.json")
            self.language_encoder = T5Encoder(t5_config, rngs=rngs, dtype=dt)
        elif config.language.encoder == "small":
            self.language_encoder = SmallTextEncoder(
                vocab_size,
                width=config.language.small_width,
                depth=config.language.small_depth,
                num_heads=config.language.small_heads,
                max_length=config.language.max_length,
                rngs=rngs,
                dtype=dt,
            )
        else:
            self.language_encoder = None
        if self.language_encoder is not None:
            self.language_projection = precision.Linear(lang_width, width, dtype=dt, rngs=rngs)
            self.language_position = _positional(rngs, (config.language.max_length, width))

        self.image_tokenizers = nnx.Dict()
        self.image_projections = nnx.Dict()
        self.image_positions = nnx.Dict()
        self.specs: list[GroupSpec] = []
        for tok in config.image_tokenizers:
            key = f"image_{tok.camera}"
            if key not in observation_spec:
                raise ValueError(
                    f"image tokenizer for camera {tok.camera!r}: the example batch has no "
                    f"observation {key!r} (has: {sorted(observation_spec)})"
                )
            _, height, width_px, _ = observation_spec[key]["shape"]
            tokenizer = ImageTokenizer(
                tok.camera,
                encoder=tok.encoder,
                num_features=tok.num_features,
                goal_fusion=tok.goal_fusion,
                film_dim=lang_width if tok.film else None,
                patch_size=tok.patch_size,
                keypoints=tok.keypoints,
                stem_widths=tok.stem_widths,
                stem_standardization=config.stem_standardization,
                goal_padding=config.goal_padding,
                rngs=rngs,
                dtype=dt,
            )
            self.image_tokenizers[tok.camera] = tokenizer
            num_tokens = tokenizer.num_tokens(height, width_px)
            self.image_projections[tok.camera] = precision.Linear(
                tok.num_features, width, dtype=dt, rngs=rngs
            )
            self.image_positions[tok.camera] = _positional(rngs, (horizon, num_tokens, width))

        self.goal_tokenizers = nnx.Dict()
        self.goal_projections = nnx.Dict()
        self.goal_positions = nnx.Dict()
        task_spec = input_spec["task"]
        for camera in config.goal_image_cameras:
            key = f"image_{camera}"
            if key not in task_spec:
                raise ValueError(
                    f"goal image camera {camera!r}: the example batch has no task {key!r} "
                    f"(has: {sorted(task_spec)})"
                )
            height, width_px, _ = task_spec[key]["shape"]
            self.goal_tokenizers[camera] = ImageTokenizer(
                camera,
                encoder="small_stem16",
                source="task",
                stem_standardization=config.stem_standardization,
                rngs=rngs,
                dtype=dt,
            )
            self.goal_projections[camera] = precision.Linear(512, width, dtype=dt, rngs=rngs)
            num_tokens = self.goal_tokenizers[camera].num_tokens(height, width_px)
            self.goal_positions[camera] = _positional(rngs, (num_tokens, width))

        if config.proprio is not None:
            proprio_dim = observation_spec["proprio"]["shape"][-1]
            self.proprio_tokenizer = ProprioTokenizer(
                proprio_dim,
                mode=config.proprio.mode,
                num_features=config.proprio.num_features,
                rngs=rngs,
                dtype=dt,
            )
            self.proprio_projection = precision.Linear(
                config.proprio.num_features, width, dtype=dt, rngs=rngs
            )
            proprio_tokens = 1 if config.proprio.mode == "linear" else proprio_dim
            self.proprio_position = _positional(rngs, (horizon, proprio_tokens, width))
        else:
            self.proprio_tokenizer = None

        readout_tokens = config.head.readout_tokens
        self.readout_position = _positional(rngs, (horizon, readout_tokens, width))
        self.transformer = BlockTransformer(transformer_config, rngs=rngs)
        if config.lora is not None:  # fine-tuning adapters; base kernels keep their paths
            apply_lora(self.transformer, config.lora, rngs=rngs)
        head_cls = ACTION_HEADS[config.head.kind]
        self.head = head_cls(
            embedding_dim=width,
            action_dim=config.action_dim,
            action_horizon=config.action_horizon,
            rngs=rngs,
            **{"dtype": dt, **dict(config.head.kwargs)},
        )
        self.group_specs = tuple(self._group_specs(readout_tokens))

    def _group_specs(self, readout_tokens: int) -> list[GroupSpec]:
        prefix, timestep = [], []
        if self.language_encoder is not None:
            prefix.append((LANGUAGE_GROUP, self.config.language.max_length))
        for camera in self.config.goal_image_cameras:
            prefix.append((f"task_goal_{camera}", self.goal_positions[camera].value.shape[0]))
        for tok in self.config.image_tokenizers:
            timestep.append((f"obs_{tok.camera}", self.image_positions[tok.camera].value.shape[1]))
        if self.proprio_tokenizer is not None:
            timestep.append(("obs_proprio", self.proprio_position.value.shape[1]))
        if self.config.repeat_task_tokens:
            timestep += [(OBS_PREFIX + name, size) for name, size in prefix]
        timestep.append((READOUT, readout_tokens))
        return default_rules(prefix, timestep)

    def unpadded_groups(self) -> tuple[str, ...]:
        """Timestep groups whose masks ignore timestep padding: Octo's readouts and repeated
        task tokens (see ModelConfig); every observation group takes the padding."""
        names = [s.name for s in self.group_specs if s.name.startswith(OBS_PREFIX + "task_")]
        if not self.config.mask_padded_readouts:
            names.append(READOUT)
        return tuple(names)

    def _position(self, embedding: nnx.Param) -> jax.Array:
        """A positional embedding, float32: added with `precision.add_param`, which keeps the
        tokens' dtype and reduces the embedding's gradient in float32."""
        return embedding.value

    def _timestep_position(self, embedding: nnx.Param, window: int) -> jax.Array:
        """The first `window` rows of a [max_horizon, n, d] timestep embedding."""
        if window > embedding.value.shape[0]:
            raise ValueError(
                f"the batch has {window} timesteps, more than the model's max_horizon "
                f"({embedding.value.shape[0]})"
            )
        return self._position(embedding)[:window]

    def encode_language(self, tasks: Mapping, *, train: bool, rng: jax.Array | None = None):
        """(embeddings float[b, L, d_lang], mask bool[b, L]) of host-tokenized instructions.
        A trainable encoder's dropout draws from `rng` (needed when training it)."""
        encoder = self.language_encoder
        frozen = self.config.language.frozen
        embedded = encoder(
            tasks["language_tokens"], tasks["language_mask"], train=train and not frozen,
            rng=rng,
        )  # fmt: skip
        if frozen:
            embedded = jax.lax.stop_gradient(embedded)
        present = tasks["pad_mask_dict"]["language_instruction"].astype(bool)[:, None]
        if not self.config.language_token_mask:  # Octo: padding positions are attended too
            return embedded, jnp.broadcast_to(present, tasks["language_mask"].shape)
        return embedded, jnp.logical_and(tasks["language_mask"], present)

    def readouts(self, observations: Mapping, tasks: Mapping, *, train: bool, rng=None):
        """Transformer outputs of the readout tokens, float[b, w, n_readout, width]."""
        return self.transformer_outputs(observations, tasks, train=train, rng=rng)[READOUT].tokens

    def transformer_outputs(
        self, observations: Mapping, tasks: Mapping, *, train: bool, rng=None
    ) -> dict[str, TokenGroup]:
        """Every group's transformer outputs by name (Octo's names: task_language,
        obs_<camera>, obs_task_language, readout_action, ...): tokens float[b, (w,) n, width],
        masks bool[b, (w,) n] as the transformer applied them (timestep padding included, but
        for `unpadded_groups`)."""
        prefix: dict[str, TokenGroup] = {}
        film_condition = None
        if self.language_encoder is not None:
            # A stream of its own, so the transformer's dropout keys stay as they were.
            language_rng = None if rng is None else jax.random.fold_in(rng, LANGUAGE_STREAM)
            embedded, mask = self.encode_language(tasks, train=train, rng=language_rng)
            prefix[LANGUAGE_GROUP] = TokenGroup(
                tokens=precision.add_param(
                    self.language_projection(embedded), self._position(self.language_position)
                ),
                mask=mask,
            )
            weights = mask[..., None].astype(embedded.dtype)
            film_condition = (embedded * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
        for camera, tokenizer in self.goal_tokenizers.items():
            group = tokenizer(observations, tasks, train=train)
            prefix[f"task_goal_{camera}"] = TokenGroup(
                tokens=precision.add_param(
                    self.goal_projections[camera](group.tokens),
                    self._position(self.goal_positions[camera]),
                ),
                mask=group.mask,
            )
        window = observations["timestep_pad_mask"].shape[1]
        timestep: dict[str, TokenGroup] = {}
        uses_film = {t.camera: t.film for t in self.config.image_tokenizers}
        for camera, tokenizer in self.image_tokenizers.items():
            condition = film_condition if uses_film[camera] else None
            group = tokenizer(observations, tasks, film_condition=condition, train=train)
            timestep[f"obs_{camera}"] = TokenGroup(
                tokens=precision.add_param(
                    self.image_projections[camera](group.tokens),
                    self._timestep_position(self.image_positions[camera], window),
                ),
                mask=group.mask,
            )
        if self.proprio_tokenizer is not None:
            group = self.proprio_tokenizer(observations)
            timestep["obs_proprio"] = TokenGroup(
                tokens=precision.add_param(
                    self.proprio_projection(group.tokens),
                    self._timestep_position(self.proprio_position, window),
                ),
                mask=group.mask,
            )
        if self.config.repeat_task_tokens:  # Octo-1.5: the task again in every timestep
            for name, group in prefix.items():
                timestep[OBS_PREFIX + name] = TokenGroup(
                    tokens=jnp.broadcast_to(
                        group.tokens[:, None],
                        (group.tokens.shape[0], window, *group.tokens.shape[1:]),
                    ),
                    mask=jnp.broadcast_to(
                        group.mask[:, None], (group.mask.shape[0], window, group.mask.shape[1])
                    ),
                )
        pad = observations["timestep_pad_mask"]
        batch = pad.shape[0]
        position = self._timestep_position(self.readout_position, window)
        readout = precision.add_param(jnp.zeros((batch, *position.shape), self.dtype), position)
        timestep[READOUT] = TokenGroup(
            tokens=readout, mask=jnp.ones(readout.shape[:-1], dtype=bool)
        )
        prefix_out, step_out = self.transformer(
            prefix,
            timestep,
            self.group_specs,
            timestep_pad_mask=pad,
            train=train,
            rng=rng,
            unpadded=self.unpadded_groups(),
        )
        return {**prefix_out, **step_out}

    def loss(self, batch: Mapping, *, rng: jax.Array, train: bool = True):
        """(scalar loss, metrics) of the action head on a batch (schema stage 5 + tokens).

        A batch may carry ``head_draws`` (``{"time": [b, w], "noise": float32[b, w, H*A]}``):
        the diffusion / flow head's training draws, replayed instead of drawn from `rng`, so
        a step reproduces another program's step (tests/training/test_finetune_octo_steps.py).
        """
        transformer_rng, head_rng = jax.random.split(rng)
        readouts = self.readouts(
            batch["observation"], batch["task"], train=train, rng=transformer_rng
        )
        return self.head.loss(
            readouts,
            batch["action"],
            batch["observation"]["timestep_pad_mask"],
            batch["action_pad_mask"],
            rng=head_rng,
            train=train,
            draws=batch.get("head_draws"),
        )

    def predict_action(
        self,
        observations: Mapping,
        tasks: Mapping,
        *,
        rng: jax.Array,
        sample_shape=(),
        noise: tuple[jax.Array, jax.Array] | None = None,
        embodiment_action_dim: int | None = None,
        argmax: bool = False,
        temperature: float | None = None,
    ) -> jax.Array:
        """Normalized action chunks float[*sample_shape, b, H, A] for the last timestep.
        `noise` and `embodiment_action_dim`: the diffusion head's; `argmax` and `temperature`:
        the discrete head's (see their predict_action)."""
        readouts = self.readouts(observations, tasks, train=False)
        if self.config.head.kind == "discrete":
            return self.head.predict_action(
                readouts, rng=rng, sample_shape=sample_shape, argmax=argmax,
                temperature=temperature,
            )  # fmt: skip
        if self.config.head.kind != "diffusion":
            if noise is not None:
                raise ValueError(
                    f"explicit noise needs the diffusion head, not {self.config.head.kind!r}"
                )
            return self.head.predict_action(readouts, rng=rng, sample_shape=sample_shape)
        return self.head.predict_action(
            readouts,
            rng=rng,
            sample_shape=sample_shape,
            noise=noise,
            embodiment_action_dim=embodiment_action_dim,
        )
