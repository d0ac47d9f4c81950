"""Octo's offline action metrics: sampled action chunks scored against the data's chunks.

The validation loss of a diffusion head (noise-prediction error at random diffusion steps)
barely predicts closed-loop success (octo#23); Octo's `VisualizationCallback` therefore also
samples actions on held-out data and scores them (octo-models/octo 241fb35,
``octo/utils/visualization_lib.py``, "vl" below; ``octo/utils/train_callbacks.py``, "tc"). The
same definitions, per action element ``(sample, batch row, chunk step)``:

- ``sampled_mse``: the squared error summed over the action dims, then averaged (vl:643-648
  ``_mse``: ``sum(delta**2, axis=-1)``, averaged by vl:166-171 ``masked_mean``); on normalized
  actions, as Octo's (vl:644). A sum over dims, not a mean: 7 dims each off by 0.1 give 0.07.
- ``xyz_angle``: the angle (radians) between the true and the predicted xyz delta,
  ``arccos(clip(u1 . u2, -1, 1))`` with ``u = v / (1e-6 + |v|)`` (vl:620-628), averaged over the
  elements whose true xyz moves, ``|xyz| > 0.01`` (vl:651-656, vl:788: "moved at least 1cm").
- ``xyz_accuracy``: the fraction of those moving elements with angle < 0.5 rad and each norm
  more than half the other's (vl:631-640).
- ``gripping_accuracy``: the fraction of elements near a true gripper change whose predicted
  gripper state is right; closed = gripper value > 0.5 (vl:610-617), near a change = the true
  state differs from the one 3 steps before or after (vl:747-779). Octo compares exactly t-3
  and t+3 with `jnp.roll` over a whole trajectory (wrapping around its ends); here it is any of
  t±1..3 inside the chunk, never wrapping: the same elements (t from c-3 to c+2 for a change
  at c) wherever changes are over 6 steps apart, and a change just outside the chunk is not seen.

Octo's layout (vl:434-446): xyz = dims 0-2, rotation 3-5, gripper = the last dim, a 7-dim
end-effector delta in metres (the OXE ``eef_pos`` encoding). `ActionLayout` names those dims
and thresholds; `layout_problem` says when an action space does not fit it (the xyz and
gripper metrics are then skipped; `sampled_mse` always applies).

Differences from Octo, by design: Octo scores the first action of each chunk only (vl:107-108)
and the states of whole held-out trajectories; here every unpadded step of the last window
step's chunk in the validation batches. Octo unnormalizes before the xyz and gripper metrics
(vl:396-431); the training loop scores normalized actions (a batch may mix datasets with
different statistics): the gripper is the same (the ``eef_pos`` normalization mask leaves it
raw, which `layout_problem` requires), the xyz angle is measured after the per-dim scaling and
"moving" (0.01) is in normalized units. Padded elements (``mask`` False) are zeroed before any
arithmetic, so a NaN there never reaches a metric. Octo draws 8 samples per state (tc:148-176,
``samples_per_state=8`` in its configs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

EEF_POS = "eef_pos"  # the OXE encoding Octo's xyz and gripper metrics assume


@dataclasses.dataclass(frozen=True)
class ActionLayout:
    """Where Octo's xyz and gripper metrics read, and their thresholds (Octo's values)."""

    xyz_dims: tuple[int, ...] = (0, 1, 2)
    gripper_dim: int = -1
    moving_norm: float = 0.01  # |true xyz| above it: "moving" (vl:788)
    angle_limit: float = 0.5  # radians, xyz_accuracy (vl:638)
    gripper_closed_above: float = 0.5  # vl:611
    gripper_change_steps: int = 3  # vl:751-752


def layout_problem(
    action_dim: int, encodings: Mapping[str, str], gripper_normalized: Mapping[str, bool]
) -> str | None:
    """Why Octo's xyz and gripper metrics do not fit the run's actions, or None when they do.

    `encodings`: each dataset's action encoding (``ActionEncoding.value``); `gripper_normalized`:
    whether its last action dim is normalized (then the 0.5 threshold means nothing).
    """
    if action_dim != 7:
        return f"the actions have {action_dim} dims, not Octo's 7 (xyz, rotation, gripper)"
    others = sorted(name for name, encoding in encodings.items() if encoding != EEF_POS)
    if others:
        return f"dataset(s) {others} are not {EEF_POS!r} end-effector deltas"
    normalized = sorted(name for name, flag in gripper_normalized.items() if flag)
    if normalized:
        return f"dataset(s) {normalized} normalize the gripper dim (action_normalization_mask)"
    return None


def _shifted(x: jnp.ndarray, k: int, fill) -> jnp.ndarray:
    """``x[..., t + k]`` along the last axis, `fill` where ``t + k`` is outside it."""
    length = x.shape[-1]
    if abs(k) >= length:
        return jnp.full_like(x, fill)
    pad = [(0, 0)] * (x.ndim - 1)
    if k > 0:
        return jnp.pad(x[..., k:], [*pad, (0, k)], constant_values=fill)
    return jnp.pad(x[..., :k], [*pad, (-k, 0)], constant_values=fill)


def _total(values: jnp.ndarray, where: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(sum of `values` where `where`, how many), float32; `where` broadcasts to `values`."""
    where = jnp.broadcast_to(where, values.shape)
    total = jnp.sum(jnp.where(where, values, 0).astype(jnp.float32))
    return total, jnp.sum(where).astype(jnp.float32)


def metric_sums(
    predicted: jnp.ndarray,
    true: jnp.ndarray,
    mask: jnp.ndarray,
    layout: ActionLayout | None = None,
) -> dict[str, tuple[jnp.ndarray, jnp.ndarray]]:
    """{name: (sum float32[], count float32[])} of each metric over the valid elements.

    predicted float[n, b, H, A] (n samples per state), true float[b, H, A], mask bool[b, H, A]
    (False: padded step or dim). `layout` None: `sampled_mse` only. Sums pool over batches
    (`pooled`); a count of 0 means the metric is undefined there (nothing moving, no change).
    """
    mask = mask.astype(bool)
    true = jnp.where(mask, true, 0.0).astype(jnp.float32)
    predicted = jnp.where(mask, predicted, 0.0).astype(jnp.float32)
    error = jnp.sum(jnp.square(predicted - true), axis=-1)  # [n, b, H]
    sums = {"sampled_mse": _total(error, jnp.any(mask, axis=-1))}
    if layout is None:
        return sums

    xyz = list(layout.xyz_dims)
    true_xyz, predicted_xyz = true[..., xyz], predicted[..., xyz]
    true_norm = jnp.linalg.norm(true_xyz, axis=-1)  # [b, H]
    predicted_norm = jnp.linalg.norm(predicted_xyz, axis=-1)  # [n, b, H]
    cosine = jnp.sum(
        (true_xyz / (1e-6 + true_norm)[..., None])
        * (predicted_xyz / (1e-6 + predicted_norm)[..., None]),
        axis=-1,
    )
    angle = jnp.arccos(jnp.clip(cosine, -1.0, 1.0))  # [n, b, H]
    close = (
        (angle < layout.angle_limit)
        & (true_norm > 0.5 * predicted_norm)
        & (predicted_norm > 0.5 * true_norm)
    )
    moving = jnp.all(mask[..., xyz], axis=-1) & (true_norm > layout.moving_norm)  # [b, H]
    sums["xyz_angle"] = _total(angle, moving)
    sums["xyz_accuracy"] = _total(close, moving)

    grip = layout.gripper_dim
    grip_valid = mask[..., grip]  # [b, H]
    closed = true[..., grip] > layout.gripper_closed_above
    predicted_closed = predicted[..., grip] > layout.gripper_closed_above  # [n, b, H]
    changing = jnp.zeros_like(grip_valid)
    for k in range(1, layout.gripper_change_steps + 1):
        for shift in (k, -k):
            other_valid = _shifted(grip_valid, shift, False)
            changing |= other_valid & (_shifted(closed, shift, False) != closed)
    sums["gripping_accuracy"] = _total(predicted_closed == closed, changing & grip_valid)
    return sums


def pooled(batches: list[Mapping[str, tuple]]) -> dict[str, float]:
    """Each metric's sum over `batches` (`metric_sums` on the host) over its total count;
    metrics with no valid element in any batch are left out (not NaN)."""
    totals: dict[str, list[float]] = {}
    for sums in batches:
        for name, (value, count) in sums.items():
            total = totals.setdefault(name, [0.0, 0.0])
            total[0] += float(np.asarray(value))
            total[1] += float(np.asarray(count))
    return {name: value / count for name, (value, count) in totals.items() if count > 0}
