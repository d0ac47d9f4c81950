"""scripts/compare_runs.py (issue 70, item 3): groups of seeded runs compared point by point
with a one-way analysis of variance. The F test agrees with an independent formula (scipy's
f_oneway); metrics files written by the trainer's own JsonlWriter are read; groups whose
deciding point is shifted by many seed spreads are called different, and the same values
split otherwise are not; a run that is missing a point is refused by name."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import pytest
from scipy import stats

from octo_like.training.benchmarks import run_comparison
from octo_like.training.run.metrics import JsonlWriter

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import compare_runs  # noqa: E402


def test_the_f_test_is_scipys_one_way_anova():
    rng = np.random.default_rng(0)
    groups = [rng.normal(m, 1.0, size=n) for m, n in ((0.0, 3), (0.5, 4), (2.0, 3))]
    f, p = run_comparison.one_way_anova(groups)
    expected = stats.f_oneway(*groups)
    assert f == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-12)
    assert run_comparison.one_way_anova([[1.0, 1.0], [1.0, 1.0]])[1] == 1.0
    assert run_comparison.one_way_anova([[1.0, 1.0], [2.0, 2.0]]) == (float("inf"), 0.0)
    with pytest.raises(ValueError, match="more runs than groups"):
        run_comparison.one_way_anova([[1.0], [2.0]])


def write_run(workdir: str, train: dict[int, float], val_loss: float, val_step: int) -> str:
    """A run's metrics.jsonl as the trainer writes it."""
    writer = JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
    for step, loss in train.items():
        writer.write(step, {"loss": loss, "grad_norm": 1.0})
    writer.write(val_step, {"loss": val_loss, "sampled_mse": 2.0}, prefix="val")
    writer.close()
    return workdir


SEED_NOISE = (-0.01, 0.0, 0.01)  # each group's three seeds: sd 0.01


def groups(tmp_path, shifts: dict[str, float]) -> list[str]:
    args = []
    for label, shift in shifts.items():
        dirs = []
        for i, noise in enumerate(SEED_NOISE):
            base = 1.0 + noise + shift
            train = {s: base + 1.0 / s for s in (100, 200, 300, 400)}
            dirs.append(write_run(str(tmp_path / f"{label}{i}"), train, base / 2, 400))
        args += ["--group", f"{label}=" + ",".join(dirs)]
    return args


def test_groups_shifted_by_many_seed_spreads_differ_and_unshifted_ones_do_not(tmp_path):
    common = ["--num_steps", "400", "--window", "200", "--deciding", "val_loss,train_loss@400"]
    out = str(tmp_path / "same")
    assert compare_runs.main([*groups(tmp_path / "a", {"x": 0, "y": 0, "z": 0}), *common,
                              "--out", out]) == 0  # fmt: skip
    record = json.loads(pathlib.Path(out + ".json").read_text())
    assert not record["differ"]
    points = ["train_loss@200", "train_loss@400", "val_loss"]
    assert [p["point"] for p in record["points"]] == points
    assert all(p["p"] == pytest.approx(1.0) for p in record["points"])
    assert record["points"][2]["within_sd"] == pytest.approx(0.005)  # val = base / 2
    out = str(tmp_path / "shifted")
    argv = [*groups(tmp_path / "b", {"x": 0, "y": 0, "z": 0.05}), *common, "--out", out]
    assert compare_runs.main(argv) == 1
    record = json.loads(pathlib.Path(out + ".json").read_text())
    val = record["points"][2]
    # between-group mean square 3 (2 (0.025/3)^2 + (0.05/3)^2) / 2 = 6.25e-4 over within 2.5e-5
    assert record["differ"] and val["f"] == pytest.approx(25.0)
    assert val["p"] == pytest.approx(stats.f.sf(25.0, 2, 6))  # 0.0012
    assert val["means"]["z"] - val["means"]["x"] == pytest.approx(0.025)
    assert "DIFFER: p < 0.05 at train_loss@400, val_loss" in pathlib.Path(out + ".txt").read_text()


def test_a_run_missing_a_point_or_a_malformed_group_is_refused_by_name(tmp_path):
    args = groups(tmp_path, {"x": 0, "y": 0})
    common = ["--window", "200", "--deciding", "val_loss"]
    assert compare_runs.main([*args, "--num_steps", "400", *common]) == 0
    with pytest.raises(SystemExit, match=r"x: .*x0/metrics.jsonl: no training loss logged in "
                                         r"steps \(400, 600\]"):  # fmt: skip
        compare_runs.main([*args, "--num_steps", "600", *common])
    write_run(str(tmp_path / "late"), {100: 1.0, 200: 1.0}, 0.5, val_step=300)
    with pytest.raises(SystemExit, match=r"late/metrics.jsonl: the run logged no validation "
                                         r"'loss' at step 200"):  # fmt: skip
        compare_runs.main(["--group", f"x={tmp_path / 'late'},{tmp_path / 'late'}",
                           "--group", f"y={tmp_path / 'y0'},{tmp_path / 'y1'}",
                           "--num_steps", "200", *common])  # fmt: skip
    late = ["--group", f"x={tmp_path / 'late'},{tmp_path / 'late'}",
            "--group", f"y={tmp_path / 'late'},{tmp_path / 'late'}"]  # fmt: skip
    assert compare_runs.main([*late, "--num_steps", "200", "--val_step", "300", *common]) == 0
    with pytest.raises(ValueError, match="--group takes LABEL=WORKDIR"):
        compare_runs.parse_groups(["x"])
    with pytest.raises(ValueError, match="deciding points \\['val_mse'\\]"):
        compare_runs.main([*args, "--num_steps", "400", "--window", "200", "--deciding", "val_mse"])
