"""The transfer benchmark's plan and arithmetic (`octo_like.envs.transfer`); its plumbing end to
end is in test_simulation.py (it needs the simulator)."""

from __future__ import annotations

import json

import pytest

from octo_like.envs.transfer import (
    Arm,
    ArmResult,
    Target,
    bar_chart,
    json_line,
    newcombe_difference,
    plan,
    summarize,
    table,
    verdict,
)


def test_targets_parse_and_validate():
    target = Target.parse("metric7=reach, push@metric7")
    assert target == Target("metric7", "metric7", ("reach", "push"))
    assert Target.parse("heldout=drawer-close").variant == "default"
    with pytest.raises(ValueError, match="NAME=TASK"):
        Target.parse("drawer-close")
    with pytest.raises(ValueError, match="unknown embodiment variant 'metric'"):
        Target.parse("x=reach@metric")
    with pytest.raises(ValueError, match="unknown MetaWorld task"):
        Target.parse("x=reech")
    with pytest.raises(ValueError, match="target name"):
        Target("Held Out", "default", ("reach",))


def test_plan_has_scratch_for_every_target_and_seed():
    a, b = Target("a", "default", ("reach",)), Target("b", "wrist", ("push",))
    arms = plan([a, b], ["full", "head_only"], [0, 1, 2])
    assert len(arms) == 2 * 3 * 3
    assert arms[:3] == [Arm(a, "full", 0), Arm(a, "head_only", 0), Arm(a, "scratch", 0)]
    assert {arm.seed for arm in arms[:6]} == {0}  # the first seed completes first
    assert arms[-1].key == "b/scratch/seed2"
    with pytest.raises(ValueError, match="modes"):
        plan([a], ["scratch"], [0])  # scratch is always there; it is not a mode to ask for
    with pytest.raises(ValueError, match="distinct names"):
        plan([a, a], ["full"], [0])
    with pytest.raises(ValueError, match="seeds"):
        plan([a], ["full"], [0, 0])


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II example (56/70 vs 48/80):
    # difference 0.2, hybrid score interval 0.0524 to 0.3339.
    diff, low, high = newcombe_difference(56, 70, 48, 80)
    assert diff == pytest.approx(0.2)
    assert low == pytest.approx(0.0524, abs=5e-4)
    assert high == pytest.approx(0.3339, abs=5e-4)
    # Degenerate counts stay inside [-1, 1].
    assert newcombe_difference(10, 10, 0, 10)[1:] == (
        pytest.approx(0.6075, abs=1e-3), pytest.approx(1.0),
    )  # fmt: skip


def results_of(counts: dict[tuple[str, int], dict[str, tuple[int, int]]]) -> list[ArmResult]:
    target = Target("heldout", "default", ("reach", "push"))
    return [ArmResult(Arm(target, mode, seed), per) for (mode, seed), per in counts.items()]


def test_summary_pools_seeds_and_states_the_gap_to_scratch(tmp_path):
    results = results_of(
        {
            ("full", 0): {"reach": (9, 10), "push": (7, 10)},
            ("full", 1): {"reach": (8, 10), "push": (8, 10)},
            ("scratch", 0): {"reach": (3, 10), "push": (1, 10)},
            ("scratch", 1): {"reach": (4, 10), "push": (2, 10)},
            ("head_only", 0): {"reach": (3, 10), "push": (2, 10)},
            ("head_only", 1): {"reach": (2, 10), "push": (3, 10)},
        }
    )
    rows = {row["mode"]: row for row in summarize(results)}
    full, scratch, head = rows["full"], rows["scratch"], rows["head_only"]
    assert (full["successes"], full["episodes"]) == (32, 40)
    assert full["seed_rates"] == [0.8, 0.8]
    assert full["per_task"]["reach"] == {"successes": 17, "episodes": 20, "success_rate": 0.85}
    assert scratch["seed_rates"] == [0.2, 0.3] and "gap_to_scratch" not in scratch
    assert full["gap_to_scratch"]["diff"] == pytest.approx(0.8 - 10 / 40)
    assert verdict(full) == "beats scratch"  # 32/40 vs 10/40: the interval excludes 0
    assert verdict(head) == "no clear difference"  # 10/40 vs 10/40
    low, high = head["gap_to_scratch"]["ci95"]
    assert low < 0 < high

    text = table(list(rows.values()))
    assert "beats scratch" in text and "no clear difference" in text
    assert "reach 17/20  push 15/20" in text
    line = json.loads(json_line(list(rows.values()), seeds=[0, 1]))
    assert line["seeds"] == [0, 1] and len(line["rows"]) == 3
    path = bar_chart(list(rows.values()), str(tmp_path / "transfer.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_mode_worse_than_scratch_is_said_so():
    results = results_of(
        {("full", 0): {"reach": (0, 20), "push": (0, 20)},
         ("scratch", 0): {"reach": (15, 20), "push": (14, 20)}}
    )  # fmt: skip
    full = next(row for row in summarize(results) if row["mode"] == "full")
    assert verdict(full) == "worse than scratch"


def test_arm_results_round_trip_through_json():
    result = results_of({("lora", 2): {"reach": (3, 5), "push": (0, 5)}})[0]
    again = ArmResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result and again.successes == 3 and again.episodes == 10
