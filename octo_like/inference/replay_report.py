"""Scores, table and plot of a replayed episode (`replay.py`): predicted vs recorded actions.

Per action dim and overall, in the dataset's units:

* ``mae``: mean absolute error of the executed actions against the recorded ones;
* ``mean_action_mae``: the same error for a policy that holds the mean action of the
  checkpoint's statistics at every step. ``mae_ratio`` = mae / mean_action_mae: about 1 (or
  more) is a policy no better than hovering at the mean, well below 1 one that follows the data;
* ``correlation``: Pearson's r of predicted and recorded over the episode (None where either
  is constant): near 0 with a small ``predicted_std`` is the hovering policy again, near 0 with a
  large one a policy acting at random;
* for 7-dim ``eef_pos`` actions (xyz delta, rotation, gripper last), Octo's ``xyz_angle``,
  ``xyz_accuracy`` and ``gripping_accuracy`` (`octo_like.training.run.action_metrics`, Octo's
  definitions, on unnormalized actions as Octo scores them), the whole episode taken as one
  chunk: a step near a gripper change is one within 3 steps of it, as Octo's trajectory scoring.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

EEF_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


def dim_names(action_dim: int, encoding: str) -> list[str]:
    if encoding == "eef_pos" and action_dim == len(EEF_NAMES):
        return list(EEF_NAMES)
    return [str(d) for d in range(action_dim)]


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r of two series; None where either is constant (r is undefined)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.clip(np.corrcoef(a, b)[0, 1], -1.0, 1.0))


def octo_metrics(
    predicted: np.ndarray, recorded: np.ndarray, dataset: str, encoding: str
) -> tuple[dict[str, Any] | None, str | None]:
    """(Octo's xyz / gripper metrics with the steps they count, None) or (None, why not)."""
    from octo_like.training.run.action_metrics import ActionLayout, layout_problem, metric_sums

    problem = layout_problem(recorded.shape[-1], {dataset: encoding}, {})
    if problem is not None:
        return None, problem
    sums = metric_sums(
        np.asarray(predicted, np.float32)[None, None],
        np.asarray(recorded, np.float32)[None],
        np.ones((1, *recorded.shape), bool),
        ActionLayout(),
    )
    metrics: dict[str, Any] = {}
    for name in ("xyz_angle", "xyz_accuracy", "gripping_accuracy"):
        total, count = (float(np.asarray(v)) for v in sums[name])
        metrics[name] = total / count if count > 0 else None  # nothing moving / no change
    metrics["moving_steps"] = int(np.asarray(sums["xyz_angle"][1]))
    metrics["gripper_change_steps"] = int(np.asarray(sums["gripping_accuracy"][1]))
    return metrics, None


def score(
    predicted: np.ndarray, recorded: np.ndarray, mean: np.ndarray, dataset: str, encoding: str
) -> dict[str, Any]:
    """The numbers of the module docstring for predicted / recorded float[T, A] and the
    statistics' mean action float[A]."""
    p, r = np.asarray(predicted, np.float64), np.asarray(recorded, np.float64)
    m = np.asarray(mean, np.float64)
    if p.shape != r.shape or m.shape != r.shape[-1:]:
        raise ValueError(f"shapes differ: predicted {p.shape}, recorded {r.shape}, mean {m.shape}")
    mae = np.abs(p - r).mean(axis=0)
    hold = np.abs(r - m).mean(axis=0)
    correlations = [correlation(p[:, d], r[:, d]) for d in range(r.shape[-1])]
    defined = [c for c in correlations if c is not None]
    overall_hold = float(hold.mean())
    octo, skipped = octo_metrics(p, r, dataset, encoding)
    result = {
        "dims": dim_names(r.shape[-1], encoding),
        "per_dim": {
            "mae": mae.tolist(),
            "mean_action_mae": hold.tolist(),
            "correlation": correlations,
            "predicted_std": p.std(axis=0).tolist(),
            "recorded_std": r.std(axis=0).tolist(),
        },
        "overall": {
            "mae": float(mae.mean()),
            "mean_action_mae": overall_hold,
            "mae_ratio": float(mae.mean()) / overall_hold if overall_hold > 0 else None,
            "mean_correlation": float(np.mean(defined)) if defined else None,
        },
        "octo": octo,
    }
    if skipped:
        result["octo_skipped"] = skipped
    return result


def report(policy, episode, replayed, mean: np.ndarray) -> dict[str, Any]:
    """Everything about one replay, JSON-able: what was replayed, by what, and its scores."""
    metadata = policy.metadata()
    execution = metadata["execution"]
    exec_horizon = execution["exec_horizon"]
    if exec_horizon is None:
        exec_horizon = 1 if execution["mode"] == "ensemble" else metadata["action_horizon"]
    return {
        "dataset": episode.dataset,
        "split": episode.split,
        "episode": episode.index,
        "episode_id": episode.episode_id,
        "steps": episode.length,
        "instruction": episode.instruction,
        "conditioning": replayed.conditioning,
        "missing_cameras": list(episode.missing_cameras),
        "checkpoint": metadata.get("checkpoint"),
        "checkpoint_step": metadata.get("step"),
        "statistics_of": metadata["dataset_name"],
        "execution": execution["mode"],
        "action_horizon": metadata["action_horizon"],
        "exec_horizon": exec_horizon,
        "chunks": len(replayed.chunk_starts),
        "action_dim": int(episode.actions.shape[-1]),
        "action_encoding": episode.encoding,
        **score(replayed.predicted, episode.actions, mean, episode.dataset, episode.encoding),
    }


def _number(value: float | None, width: int = 9) -> str:
    if value is None or not math.isfinite(value):
        return "-".rjust(width)
    return f"{value:{width}.4g}"


def format_text(result: dict[str, Any]) -> str:
    """The report as a table for a terminal."""
    task = {"language": repr(result["instruction"]), "goal": "goal image: the episode's last frame"}
    lines = [
        f"replay of {result['dataset']} {result['split']} episode {result['episode']} "
        f"({result['steps']} steps, id {result['episode_id']}), "
        f"task: {task.get(result['conditioning'], 'none (unconditioned)')}",
        f"policy: {result['checkpoint']} step {result['checkpoint_step']}, statistics of "
        f"{result['statistics_of']}, {result['execution']} execution of {result['exec_horizon']}"
        f"/{result['action_horizon']} actions per chunk: {result['chunks']} chunks",
    ]
    if result["missing_cameras"]:
        lines.append(
            f"cameras the dataset lacks, masked as in training: {result['missing_cameras']}"
        )
    per_dim, overall = result["per_dim"], result["overall"]
    header = ("dim", "MAE", "hold MAE", "ratio", "corr", "pred std", "data std")
    lines.append(f"{header[0]:>8}" + "".join(f"{h:>10}" for h in header[1:]))
    for d, name in enumerate(result["dims"]):
        hold = per_dim["mean_action_mae"][d]
        ratio = per_dim["mae"][d] / hold if hold > 0 else None
        values = (
            per_dim["mae"][d], hold, ratio, per_dim["correlation"][d],
            per_dim["predicted_std"][d], per_dim["recorded_std"][d],
        )  # fmt: skip
        lines.append(f"{name:>8}" + "".join(" " + _number(v) for v in values))
    lines.append(
        f"{'all':>8} {_number(overall['mae'])} {_number(overall['mean_action_mae'])} "
        f"{_number(overall['mae_ratio'])} {_number(overall['mean_correlation'])}"
    )
    lines.append(
        "(hold MAE: of holding the checkpoint's mean action at every step; ratio: MAE / hold "
        "MAE; corr: Pearson's r of predicted and recorded)"
    )
    ratio = overall["mae_ratio"]
    if ratio is not None:
        verdict = (
            "better than holding the mean action"
            if ratio < 1
            else "no better than holding the mean action (hovering at the mean scores 1, "
            "acting at random more)"
        )
        lines.append(f"MAE / hold MAE = {ratio:.3g}: {verdict}")
    octo = result["octo"]
    if octo is None:
        lines.append(f"Octo's xyz / gripper metrics: skipped ({result.get('octo_skipped')})")
    else:
        lines.append(
            f"Octo's metrics: xyz_angle {_number(octo['xyz_angle'], 0)} rad and xyz_accuracy "
            f"{_number(octo['xyz_accuracy'], 0)} over {octo['moving_steps']} moving steps, "
            f"gripping_accuracy {_number(octo['gripping_accuracy'], 0)} over "
            f"{octo['gripper_change_steps']} steps near a gripper change"
        )
    if result.get("plot"):
        lines.append(f"plot: {result['plot']}")
    return "\n".join(lines)


def save_plot(path: str, episode, replayed, mean: np.ndarray) -> str:
    """A PNG of predicted vs recorded actions over the episode, one panel per dim, with the
    mean action (dashed) and the steps where a new chunk was predicted (ticks at the top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recorded, predicted = episode.actions, replayed.predicted
    names = dim_names(recorded.shape[-1], episode.encoding)
    steps = np.arange(recorded.shape[0])
    figure, axes = plt.subplots(
        len(names), 1, figsize=(8, 1.6 * len(names) + 0.6), sharex=True, squeeze=False
    )
    for d, (axis, name) in enumerate(zip(axes[:, 0], names, strict=True)):
        axis.plot(steps, recorded[:, d], color="black", label="recorded")
        axis.plot(steps, predicted[:, d], color="tab:blue", label="policy")
        axis.axhline(mean[d], color="grey", linestyle="--", linewidth=1, label="mean action")
        if len(replayed.chunk_starts) < len(steps):  # receding horizon: mark the chunks
            for start in replayed.chunk_starts:
                axis.axvline(start, color="tab:blue", alpha=0.15, linewidth=1)
        error = float(np.abs(predicted[:, d] - recorded[:, d]).mean())
        axis.set_ylabel(name)
        axis.set_title(f"{name}: MAE {error:.3g}", fontsize=8, loc="right")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("step")
    figure.suptitle(
        f"{episode.dataset} {episode.split} episode {episode.index}: {episode.instruction!r}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
