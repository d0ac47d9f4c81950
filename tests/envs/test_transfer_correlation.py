"""scripts/transfer_correlation.py: arms of several runs ranked together, with a summed loss
(Octo's loss_scale="action_dim") put on the per-dimension scale first."""

from __future__ import annotations

import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import transfer_correlation  # noqa: E402


def arm(seed: int, successes: int, loss: float, summed: bool, mode: str = "full") -> dict:
    command = ["finetune.py", "--config.model.action_dim=4"]
    if summed:
        command.append("--config.model.head.kwargs={'loss_scale': 'action_dim'}")
    return {
        "target": "test", "mode": mode, "seed": seed, "per_task": {"a": [successes, 20]},
        "command": command, "offline": {"loss": loss, "sampled_mse": loss, "train_loss": loss},
    }  # fmt: skip


def test_summed_losses_are_divided_by_the_action_dim_before_ranking(tmp_path, capsys):
    mean_runs, summed_runs = tmp_path / "own", tmp_path / "octo"
    for folder in (mean_runs, summed_runs):
        (folder / "full").mkdir(parents=True)
    # Per dim, the summed runs' losses (4x) interleave with the mean runs': 0.1 < 0.15 < 0.2 ...
    arms = [(mean_runs, arm(0, 18, 0.1, False)), (summed_runs, arm(1, 16, 0.6, True)),
            (mean_runs, arm(2, 14, 0.2, False)), (summed_runs, arm(3, 12, 1.0, True))]  # fmt: skip
    for i, (folder, record) in enumerate(arms):
        (folder / "full" / f"seed{i}.json").write_text(json.dumps(record))
    tables = transfer_correlation.main([str(mean_runs), str(summed_runs)])
    assert tables["all arms"]["loss"]["rho"] == -1.0  # success falls as the per-dim loss rises
    assert tables["all arms"]["sampled_mse"]["rho"] == -0.8  # not rescaled: 0.1 0.6 0.2 1.0
    assert "recipe = octo: 2 arms" in capsys.readouterr().out
