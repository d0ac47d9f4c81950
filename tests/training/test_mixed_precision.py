"""bfloat16 compute with float32 master weights trains like float32 on the same batches."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from octo_like.model.config import (
    HeadConfig,
    ImageTokenizerConfig,
    LanguageConfig,
    ModelConfig,
    ProprioTokenizerConfig,
)
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.model_inputs import tokenize_tasks
from octo_like.model.testing import host_initialized_model
from octo_like.training.optim.optimizer import OptimizerConfig, loop_learning_rate, make_optimizer
from octo_like.training.run.step import TrainState, make_steps
from tests.jaxprs import equations

B, W, H, A, P = 4, 2, 4, 3, 5
STEPS = 16
# Mean and worst per-step relative loss difference allowed between the bfloat16 and float32 runs.
MEAN_TOLERANCE, MAX_TOLERANCE = 0.01, 0.03


def _batches(rng: np.random.Generator, count: int) -> list[dict]:
    ones = lambda *shape: np.ones(shape, bool)
    out = []
    for _ in range(count):
        out.append(
            {
                "observation": {
                    "image_primary": rng.integers(0, 255, (B, W, 32, 32, 3), dtype=np.uint8),
                    "proprio": rng.normal(size=(B, W, P)).astype(np.float32),
                    "proprio_pad_mask": ones(B, W, P),
                    "timestep_pad_mask": ones(B, W),
                    "pad_mask_dict": {"image_primary": ones(B, W), "proprio": ones(B, W)},
                },
                "task": {
                    "language_instruction": np.array([b"push the block left"] * B, object),
                    "image_primary": rng.integers(0, 255, (B, 32, 32, 3), dtype=np.uint8),
                    "pad_mask_dict": {
                        "language_instruction": ones(B),
                        "image_primary": ones(B),
                    },
                },
                "action": rng.normal(size=(B, W, H, A)).astype(np.float32),
                "action_pad_mask": ones(B, W, H, A),
            }
        )
    return out


def _operand_dtypes(jaxpr, primitive: str) -> list[tuple[str, ...]]:
    """Operand dtypes of every `primitive` equation, sub-jaxprs (custom_vjp bodies) included."""
    return [tuple(str(v.aval.dtype) for v in eqn.invars) for eqn in equations(jaxpr, primitive)]


def _train(config: ModelConfig, batches: list[dict]):
    """Losses of STEPS AdamW steps from the same host-drawn initial weights; the loss jaxpr."""
    model = host_initialized_model(config, batches[0], {}, seed=3)
    device_batches = []
    for batch in batches:
        task = tokenize_tasks(batch["task"], model.text_tokenizer)
        task.pop("language_instruction")
        device_batches.append({**batch, "task": task})
    graphdef, params, rest = nnx.split(model.module, nnx.Param, ...)
    opt_config = OptimizerConfig(learning_rate=1e-3, warmup_steps=1, clip_gradient_norm=1.0)
    optimizer, _ = make_optimizer(opt_config, params, STEPS)
    train_step, _ = make_steps(
        graphdef, rest, optimizer, loop_learning_rate(opt_config, STEPS), jax.random.key(0)
    )
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    jaxpr = jax.make_jaxpr(train_step)(state, device_batches[0]).jaxpr
    step = jax.jit(train_step)
    losses = []
    for i in range(STEPS):
        state, metrics = step(state, device_batches[i % len(device_batches)])
        losses.append(float(metrics["loss"]))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    assert all(
        x.dtype == jnp.float32
        for x in jax.tree.leaves(state.opt_state)
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
    ), "optimizer moments stay float32"
    return losses, jaxpr


def test_bfloat16_losses_track_float32(tmp_path):
    language_dir = write_tiny_t5_checkpoint(
        str(tmp_path / "t5"), instructions=["push the block left"]
    )
    config = ModelConfig(
        transformer="dummy",
        image_tokenizers=(ImageTokenizerConfig("primary", goal_fusion=True, num_features=32),),
        proprio=ProprioTokenizerConfig(num_features=16),
        language=LanguageConfig(
            encoder="small", checkpoint_dir=language_dir, small_width=32, frozen=False
        ),
        window=W,
        action_horizon=H,
        action_dim=A,
        head=HeadConfig(kind="mse"),  # deterministic: the loss moves with the weights alone
        attention="einsum",
    )
    batches = _batches(np.random.default_rng(0), 4)
    fp32, fp32_jaxpr = _train(config, batches)
    bf16, bf16_jaxpr = _train(dataclasses.replace(config, dtype="bfloat16"), batches)

    # The bfloat16 run really computes in bfloat16: convolutions and matmuls take bf16 operands
    # (accumulating in float32, `model/precision.py`).
    assert "bf16[" not in str(fp32_jaxpr)
    for primitive in ("conv_general_dilated", "dot_general"):
        operands = _operand_dtypes(bf16_jaxpr, primitive)
        assert operands and any(set(o) == {"bfloat16"} for o in operands), primitive
    # ... and the loss it trains is float32 and follows the float32 run.
    relative = np.abs(np.array(bf16) - np.array(fp32)) / np.abs(np.array(fp32))
    assert relative.max() > 1e-6, "bfloat16 rounding must show in the losses"
    assert relative.mean() <= MEAN_TOLERANCE and relative.max() <= MAX_TOLERANCE, (fp32, bf16)
    assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0], "both runs learn"
