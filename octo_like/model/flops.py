"""Analytic FLOP count of one training step, for model-FLOPs utilization (MFU).

A multiply-add is 2 FLOPs. Only matrix products and convolutions are counted (elementwise ops,
norms, softmax and the optimizer are a few percent and are what MFU leaves out by convention).
Masked attention is counted dense, as every implementation computes it.

Per example, with N transformer tokens, width d, MLP width m and L layers:

    transformer forward = L * (2 N (4 d^2 + 2 d m)  +  4 N^2 d)        # qkv/out, MLP, QK^T and AV
    image stem forward  = sum over convs of 2 * H_out * W_out * k^2 * C_in * C_out, per frame
    keypoints forward   = 2 * (H/4) (W/4) C_2 K  +  2 * (H/4) (W/4) K 2  +  2 * K 2 F  # detect,
                                                    # expectation, embedding (K keypoints)
    projections forward = 2 * tokens * d_in * d                       # image/proprio/text -> d
    frozen T5 forward   = L_t * (2 l (4 d_t i + g d_t f) + 4 l^2 i)    # l tokens, inner i, ff f,
                                                                     # g = 2 (relu) or 3 (gated)
    diffusion head      = per (b, w): time MLP 8 t^2 + 2 (t + d + c) h + blocks 16 h^2 + 2 h c

Training costs forward + backward: a layer whose input needs a gradient costs 3x its forward
(output, input and weight gradients), a trainable layer fed by data or by a frozen encoder 2x
(no input gradient), and a frozen, stop-gradient encoder 1x. `train_step_flops` sums these for a
batch; `scripts/benchmark_model.py` divides by step time and the accelerator's peak.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax

from octo_like.model.config import ModelConfig
from octo_like.model.tokenizers.image import KEYPOINT_MAP, KEYPOINT_STRIDE
from octo_like.model.tokenizers.stems import PATCH, stem_features
from octo_like.model.transformer import TRANSFORMER_PRESETS


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """Training FLOPs of one example, by component; `total(batch)` scales to a batch."""

    transformer: float
    image_tokenizers: float
    projections: float
    language: float
    head: float
    tokens: int  # transformer sequence length

    @property
    def per_example(self) -> float:
        return (
            self.transformer
            + self.image_tokenizers
            + self.projections
            + self.language
            + (self.head)
        )

    def total(self, batch_size: int) -> float:
        return batch_size * self.per_example

    def as_dict(self, batch_size: int) -> dict[str, float]:
        parts = ("transformer", "image_tokenizers", "projections", "language", "head")
        return {
            **{name: batch_size * getattr(self, name) for name in parts},
            "total": self.total(batch_size),
        }


def _stem_forward(
    height: int, width: int, channels: int, encoder: str, features: int, patch: int = PATCH
):
    """(first conv, other convs) forward FLOPs of one frame through an image encoder."""
    if encoder == "patch16":
        return 2.0 * (height // patch) * (width // patch) * patch * patch * channels * features, 0.0
    convs, c_in, h, w = [], channels, height, width
    widths = stem_features(patch)
    for c_out in widths:
        h, w = h // 2, w // 2
        convs.append(2.0 * h * w * 9 * c_in * c_out)
        c_in = c_out
    k = patch // 2 ** len(widths)
    convs.append(2.0 * (height // patch) * (width // patch) * k * k * c_in * features)
    return convs[0], sum(convs[1:])


def _keypoints_forward(height: int, width: int, patch: int, keypoints: int, features: int):
    """Forward FLOPs of one frame's spatial-softmax keypoints (0 when there are none)."""
    if not keypoints:
        return 0.0
    positions = (height // KEYPOINT_STRIDE) * (width // KEYPOINT_STRIDE)
    channels = stem_features(patch)[KEYPOINT_MAP]
    return 2.0 * positions * keypoints * (channels + 2) + 2.0 * keypoints * 2 * features


def _transformer_forward(num_layers: int, width: int, mlp: int, tokens: int) -> float:
    dense = 2.0 * tokens * (4 * width * width + 2 * width * mlp)
    return num_layers * (dense + 4.0 * tokens * tokens * width)


def _t5_forward(t5: Mapping, length: int) -> float:
    d, inner, ff = t5["d_model"], t5["num_heads"] * t5["d_kv"], t5["d_ff"]
    gated = 3 if str(t5.get("feed_forward_proj", "relu")).startswith("gated") else 2
    per_layer = 2.0 * length * (4 * d * inner + gated * d * ff) + 4.0 * length**2 * inner
    return t5["num_layers"] * per_layer


def _head_forward(head_params: Mapping, kind: str) -> float:
    """Per (b, w) element. Iterative heads (diffusion, flow) read their MLP sizes from params."""
    if kind in ("diffusion", "flow"):
        network = head_params["network"]
        leaves = jax.tree_util.tree_flatten_with_path(network)[0]
        total = 0.0
        for path, leaf in leaves:
            name = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
            if name.endswith("kernel") and leaf.ndim == 2:
                total += 2.0 * leaf.shape[0] * leaf.shape[1]
        return total
    kernel = head_params["proj"]["kernel"]
    return 2.0 * kernel.shape[0] * kernel.shape[1]


def train_step_flops(
    config: ModelConfig,
    input_spec: Mapping,
    *,
    group_tokens: tuple[int, int],
    head_params: Mapping,
    t5_config: Mapping | None = None,
) -> FlopCount:
    """Training FLOPs per example.

    group_tokens: (prefix tokens, tokens per timestep) of the block transformer's sequence.
    head_params: the head's parameter shapes (a tree with ``.shape``/``.ndim`` leaves).
    t5_config: the T5 encoder's config.json fields when the language encoder is T5.
    """
    preset = TRANSFORMER_PRESETS[config.transformer]
    d = preset.width
    prefix, per_step = group_tokens
    n = prefix + config.window * per_step
    transformer = 3.0 * _transformer_forward(preset.num_layers, d, preset.mlp_dim, n)

    observation = input_spec["observation"]
    stems = projections = 0.0
    for tok in config.image_tokenizers:
        _, h, w, c = observation[f"image_{tok.camera}"]["shape"]
        channels = c * (2 if tok.goal_fusion else 1)
        p = tok.patch_size
        first, rest = _stem_forward(h, w, channels, tok.encoder, tok.num_features, p)
        rest += _keypoints_forward(h, w, p, tok.keypoints, tok.num_features)
        stems += config.window * (2.0 * first + 3.0 * rest)
        tokens = (h // p) * (w // p) + tok.keypoints
        projections += 3.0 * config.window * 2.0 * tokens * tok.num_features * d
    for camera in config.goal_image_cameras:
        h, w, c = input_spec["task"][f"image_{camera}"]["shape"]
        first, rest = _stem_forward(h, w, c, "small_stem16", 512)
        stems += 2.0 * first + 3.0 * rest
        projections += 3.0 * 2.0 * (h // PATCH) * (w // PATCH) * 512 * d
    if config.proprio is not None:
        proprio_dim = observation["proprio"]["shape"][-1]
        proprio_tokens = 1 if config.proprio.mode == "linear" else proprio_dim
        dense_in = 2.0 * proprio_dim * config.proprio.num_features if proprio_tokens == 1 else 0
        per_token = 2.0 * config.proprio.num_features * d
        projections += 3.0 * config.window * (dense_in + proprio_tokens * per_token)

    language = 0.0
    length = config.language.max_length
    if config.language.encoder == "t5":
        if t5_config is None:
            raise ValueError("train_step_flops: a T5 language encoder needs its t5_config")
        language = (1.0 if config.language.frozen else 3.0) * _t5_forward(t5_config, length)
        grad = 2.0 if config.language.frozen else 3.0
        projections += grad * 2.0 * length * t5_config["d_model"] * d
    elif config.language.encoder == "small":
        lw = config.language.small_width
        small = config.language.small_depth * (2.0 * length * 12 * lw * lw + 4.0 * length**2 * lw)
        language = (1.0 if config.language.frozen else 3.0) * small
        projections += (2.0 if config.language.frozen else 3.0) * 2.0 * length * lw * d

    head = 3.0 * config.window * _head_forward(head_params, config.head.kind)
    return FlopCount(transformer, stems, projections, language, head, n)


def model_train_flops(module, input_spec: Mapping) -> FlopCount:
    """`train_step_flops` of a built `OctoModule` and its input spec (an `OctoModel`'s)."""
    from flax import nnx

    from octo_like.model.language import T5EncoderConfig

    prefix = sum(s.num_tokens for s in module.group_specs if s.is_prefix)
    per_step = sum(s.num_tokens for s in module.group_specs if not s.is_prefix)
    t5 = None
    if module.config.language.encoder == "t5":
        path = f"{module.config.language.checkpoint_dir}/config.json"
        t5 = dataclasses.asdict(T5EncoderConfig.from_json(path))
    return train_step_flops(
        module.config,
        input_spec,
        group_tokens=(prefix, per_step),
        head_params=nnx.to_pure_dict(nnx.state(module.head, nnx.Param)),
        t5_config=t5,
    )


# Dense bfloat16 peak FLOP/s per chip from the vendors' data sheets (no sparsity). MFU is always
# taken against this peak, whatever the run's dtype, so float32 and bfloat16 runs compare.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),  # SXM
    ("H200", 989.4e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
)


def peak_flops(device_kind: str) -> tuple[str, float] | None:
    """(table entry, peak bf16 FLOP/s) for a `jax.Device.device_kind`, None if unknown (CPU)."""
    for name, peak in PEAK_BF16_FLOPS:
        if name.lower() in device_kind.lower():
            return name, peak
    return None
