"""The analytic FLOP count: its formula, the peak table, and agreement with XLA's own count."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from octo_like.model.config import (
    HeadConfig,
    ImageTokenizerConfig,
    LanguageConfig,
    ModelConfig,
)
from octo_like.model.flops import peak_flops, train_step_flops

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "scripts"


def test_transformer_term_follows_the_documented_formula():
    """tiny = 4 layers, width 192, MLP 768; one 32x32 camera -> 4 tokens + 1 readout per step."""
    config = ModelConfig(
        transformer="tiny",
        image_tokenizers=(ImageTokenizerConfig("primary", encoder="patch16", num_features=8),),
        language=LanguageConfig(encoder="none"),
        window=2,
        action_horizon=1,
        action_dim=1,
        head=HeadConfig(kind="mse"),
    )
    spec = {"observation": {"image_primary": {"shape": (2, 32, 32, 3)}}, "task": {}}
    head = {"proj": {"kernel": _Shape(192, 1)}}
    count = train_step_flops(config, spec, group_tokens=(0, 5), head_params=head)
    n, d, m, layers = 10, 192, 768, 4
    forward = layers * (2 * n * (4 * d * d + 2 * d * m) + 4 * n * n * d)
    assert count.tokens == n
    assert count.transformer == 3 * forward
    # patch16: 2 x 4 patches x (16*16*3) x 8 features, twice per window, first (only) conv 2x.
    assert count.image_tokenizers == 2 * 2 * (2 * 4 * 768 * 8)
    assert count.head == 3 * 2 * (2 * 192 * 1)
    assert count.total(5) == 5 * count.per_example


class _Shape:
    def __init__(self, *shape):
        self.shape, self.ndim = shape, len(shape)


def test_peak_table_names_the_entry_it_used():
    assert peak_flops("NVIDIA H100 80GB HBM3") == ("H100", 989.4e12)
    assert peak_flops("NVIDIA H100 PCIe")[1] == 756e12  # not the SXM figure
    assert peak_flops("NVIDIA H200")[0] == "H200"
    assert peak_flops("NVIDIA A100-SXM4-80GB")[1] == 312e12
    assert peak_flops("TPU v4")[1] == 275e12
    assert peak_flops("TPU v5 lite")[1] == 197e12
    assert peak_flops("TPU v5p")[1] == 459e12
    assert peak_flops("cpu") is None


@pytest.mark.slow
def test_benchmark_counts_agree_with_xla_on_octo_shapes(tmp_path):
    """Octo's real input shapes (256/128 px cameras with goal fusion, T5-base, diffusion head)
    on the tiny transformer: XLA's cost analysis of the compiled train step (einsum attention,
    no lax.map) must agree with the analytic count within 10%. The traced step's device-time
    summary and the matmul ceiling come back in the JSON line. Run as its own process: a test
    process that loaded libtpu's compile-only topologies (the pod tests) traces no CPU ops."""
    done = subprocess.run(
        [
            sys.executable, str(SCRIPTS / "benchmark_model.py"),
            "--size", "tiny", "--batch", "1", "--attention", "einsum", "--steps", "1",
            "--warmup", "0", "--infer_calls", "0", "--trace_dir", str(tmp_path),
            "--trace_steps", "1", "--matmul_ceiling",
        ],
        capture_output=True, text=True, timeout=900, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0.9 <= result["xla_over_analytic"] <= 1.1, result["analytic_flops_breakdown"]
    # the presets' sequence: 16 task tokens, then per timestep 256 + 64 image tokens, the task
    # tokens again (Octo-1.5) and a readout
    assert result["tokens_per_example"] == 16 + 2 * (256 + 64 + 16 + 1)
    assert result["mfu"] is None and result["peak_source"] is None  # CPU: no known peak
    assert result["params"]["frozen"] > 80e6  # T5-base's encoder, frozen
    for key in ("compile_s", "step_s", "samples_per_s", "tokens_per_s", "achieved_tflops"):
        assert result[key] > 0
    device_ms = result["device_ms_by_category"]
    # On CPU the stems' convolutions may run inside YNNPACK fusions, counted as matmul.
    assert device_ms["total"] > 0 and device_ms["matmul"] > 0
    assert device_ms["matmul"] + device_ms["convolution"] > 0.2 * device_ms["total"]
    assert set(result["matmul_ceiling"]) == {"d_x_d", "d_x_mlp", "mlp_x_d", "tflops"}
    assert result["fraction_of_matmul_ceiling"] > 0


def test_proprio_projection_counts_every_token():
    """per_dim proprio makes one token per dimension, each projected to the width."""
    from octo_like.model.config import ProprioTokenizerConfig

    def count(mode):
        config = ModelConfig(
            transformer="tiny",
            image_tokenizers=(),
            proprio=ProprioTokenizerConfig(mode=mode, num_features=16),
            language=LanguageConfig(encoder="none"),
            window=1,
            action_horizon=1,
            action_dim=1,
            head=HeadConfig(kind="mse"),
        )
        spec = {"observation": {"proprio": {"shape": (1, 5)}}, "task": {}}
        head = {"proj": {"kernel": _Shape(192, 1)}}
        return train_step_flops(config, spec, group_tokens=(0, 6), head_params=head).projections

    assert count("linear") == 3 * (2 * 5 * 16 + 2 * 16 * 192)
    assert count("per_dim") == 3 * 5 * (2 * 16 * 192)


@pytest.mark.parametrize("patch", [8, 16])
def test_stem_count_agrees_with_xla_for_each_patch_size(patch):
    """The analytic stem term follows the stem a patch size builds (8: three convs, 16: four)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from octo_like.model.flops import _stem_forward
    from octo_like.model.tokenizers.stems import SmallStem16

    stem = SmallStem16(6, num_features=64, patch_size=patch, rngs=nnx.Rngs(0))
    graph, state = nnx.split(stem)
    step = jax.jit(lambda state, x: nnx.merge(graph, state)(x))
    cost = step.lower(state, jnp.zeros((1, 64, 64, 6))).compile().cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    analytic = sum(_stem_forward(64, 64, 6, "small_stem16", 64, patch))
    assert 0.9 <= xla / analytic <= 1.1, (xla, analytic)


def test_keypoint_count_agrees_with_xla():
    """The keypoint term (detector, expectation, embedding) is what XLA counts on top of the
    same tokenizer without keypoints."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from octo_like.model.flops import _keypoints_forward
    from octo_like.model.tokenizers.image import ImageTokenizer

    def xla_flops(keypoints):
        tok = ImageTokenizer("primary", num_features=64, keypoints=keypoints, rngs=nnx.Rngs(0))
        graph, state = nnx.split(tok)
        key = "image_primary"
        obs = {
            key: jnp.zeros((1, 1, 64, 64, 3), jnp.uint8),
            "pad_mask_dict": {key: jnp.ones((1, 1), bool)},
        }
        step = jax.jit(lambda state, obs: nnx.merge(graph, state)(obs, {}).tokens)
        cost = step.lower(state, obs).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    extra = xla_flops(32) - xla_flops(0)
    analytic = _keypoints_forward(64, 64, 16, 32, 64)
    assert 0.9 <= extra / analytic <= 1.1, (extra, analytic)
    assert _keypoints_forward(64, 64, 16, 0, 64) == 0.0
