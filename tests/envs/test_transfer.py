"""The transfer benchmark's plan and arithmetic (`octo_like.envs.transfer.plan`, `transfer_summary`,
`transfer_charts`); its plumbing end to end is in test_broad_transfer.py (it needs the
simulator)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from octo_like.envs.transfer.plan import (
    Arm,
    ArmResult,
    Recipe,
    Target,
    newcombe_difference,
    parse_recipes,
    plan,
)
from octo_like.envs.transfer.transfer_charts import bar_chart, curve_chart
from octo_like.envs.transfer.transfer_summary import json_line, summarize, table, verdict


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
    first = [Arm(a, "full", 0, 50), Arm(a, "head_only", 0, 50), Arm(a, "scratch", 0, 50)]
    assert arms[:3] == first
    assert {arm.seed for arm in arms[:6]} == {0}  # the first seed completes first
    assert arms[-1].key == "b/50demos/scratch/seed2"
    assert Arm(a, "zero_shot", 0).key == "a/zero_shot/seed0"  # trained on no demonstrations
    with pytest.raises(ValueError, match="modes"):
        plan([a], ["scratch"], [0])  # scratch is always there; it is not a mode to ask for
    with pytest.raises(ValueError, match="distinct names"):
        plan([a, a], ["full"], [0])
    with pytest.raises(ValueError, match="seeds"):
        plan([a], ["full"], [0, 0])
    with pytest.raises(ValueError, match="demonstration counts"):
        plan([a], ["full"], [0], [0, 5])


def test_a_curve_plans_every_count_for_both_arms_of_a_seed_before_the_next_seed():
    a = Target("a", "default", ("reach",))
    arms = plan([a], ["full"], [0, 1], [10, 5])
    assert [(arm.seed, arm.demos, arm.mode) for arm in arms] == [
        (0, 5, "full"), (0, 5, "scratch"), (0, 10, "full"), (0, 10, "scratch"),
        (1, 5, "full"), (1, 5, "scratch"), (1, 10, "full"), (1, 10, "scratch"),
    ]  # fmt: skip
    assert len({arm.key for arm in arms}) == len(arms)  # every run has its own directory


def test_recipes_parse_by_name_and_plan_an_arm_each_beside_the_modes():
    relang = "relang=full:--config.reinitialize=('^language_encoder/',)"
    recipes = parse_recipes([relang, "hot=full:--config.optimizer.learning_rate=1e-3",
                             "hot=full:--config.optimizer.warmup_steps=10"])  # fmt: skip
    assert recipes == {
        "relang": Recipe("relang", "full", ("--config.reinitialize=('^language_encoder/',)",)),
        "hot": Recipe("hot", "full", ("--config.optimizer.learning_rate=1e-3",
                                      "--config.optimizer.warmup_steps=10")),
    }  # fmt: skip
    a = Target("a", "default", ("reach",))
    arms = plan([a], ["full"], [0, 1], [5], list(recipes))
    assert [(arm.seed, arm.mode) for arm in arms] == [
        (0, "full"), (0, "relang"), (0, "hot"), (0, "scratch"),
        (1, "full"), (1, "relang"), (1, "hot"), (1, "scratch"),
    ]  # fmt: skip
    assert arms[1].key == "a/5demos/relang/seed0"  # its own run directory and result
    with pytest.raises(ValueError, match="NAME=MODE:FLAG"):
        parse_recipes(["relang=full"])  # a recipe without flags is its mode
    with pytest.raises(ValueError, match="two modes"):
        parse_recipes(["x=full:--config.seed=1", "x=lora:--config.seed=2"])
    with pytest.raises(ValueError, match="unknown mode 'fulll'"):
        parse_recipes(["x=fulll:--config.seed=1"])
    with pytest.raises(ValueError, match="recipe name 'scratch'"):
        parse_recipes(["scratch=full:--config.seed=1"])  # would share scratch's directories
    with pytest.raises(ValueError, match="finetune.py flags"):
        parse_recipes(["x=full:config.seed=1"])
    with pytest.raises(ValueError, match="recipes"):
        plan([a], ["full"], [0], [5], ["x", "x"])


def test_a_recipe_is_compared_with_scratch_and_with_its_base_mode_seed_by_seed():
    results = results_of(
        {
            ("full", 0): {"reach": (6, 10), "push": (5, 10)},
            ("full", 1): {"reach": (7, 10), "push": (5, 10)},
            ("full", 2): {"reach": (5, 10), "push": (6, 10)},
            ("relang", 0): {"reach": (9, 10), "push": (6, 10)},
            ("relang", 1): {"reach": (8, 10), "push": (7, 10)},
            ("relang", 2): {"reach": (9, 10), "push": (6, 10)},
            ("scratch", 0): {"reach": (4, 10), "push": (4, 10)},
            ("scratch", 1): {"reach": (5, 10), "push": (4, 10)},
            ("scratch", 2): {"reach": (4, 10), "push": (5, 10)},
        }
    )
    rows = {row["mode"]: row for row in summarize(results, {"relang": "full"})}
    relang = rows["relang"]
    # Per seed: relang (15, 15, 15)/20 against full (11, 12, 11)/20 and scratch (8, 9, 9)/20.
    to_full = relang["gap_to_mode"]
    assert to_full["mode"] == "full" and "scratch_demos" not in to_full
    assert to_full["paired"]["differences"] == pytest.approx([0.2, 0.15, 0.2], abs=1e-4)
    # By hand: mean .55/3, sd of (.2, .15, .2) = .05/sqrt(3), t(.975, 2) = 4.302653.
    mean, half = 0.55 / 3, 4.302653 * (0.05 / 3**0.5) / 3**0.5
    assert to_full["paired"]["t_ci95"] == pytest.approx([mean - half, mean + half], abs=1e-4)
    assert relang["gap_to_scratch"]["paired"]["differences"] == pytest.approx([0.35, 0.3, 0.3])
    reach = relang["per_task"]["reach"]["gap_to_mode"]["paired"]["differences"]
    assert reach == pytest.approx([0.3, 0.1, 0.4], abs=1e-4)
    assert "gap_to_mode" not in rows["full"] and "gap_to_mode" not in rows["scratch"]
    text = table(list(rows.values()))
    assert "vs full: +0.18 [" in text and "per-seed differences +0.20 +0.15 +0.20" in text
    # Without the mapping a recipe's row is one more arm against scratch.
    assert all("gap_to_mode" not in row for row in summarize(results))


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


def results_of(
    counts: dict[tuple[str, int], dict[str, tuple[int, int]]], demos: int = 50
) -> list[ArmResult]:
    target = Target("heldout", "default", ("reach", "push"))
    return [ArmResult(Arm(target, mode, seed, demos), per) for (mode, seed), per in counts.items()]


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
    reach = full["per_task"]["reach"]
    assert (reach["successes"], reach["episodes"], reach["success_rate"]) == (17, 20, 0.85)
    assert reach["by_seed"] == {0: 0.9, 1: 0.8}
    assert scratch["seed_rates"] == [0.2, 0.3] and "gap_to_scratch" not in scratch
    assert full["gap_to_scratch"]["diff"] == pytest.approx(0.8 - 10 / 40)
    assert full["gap_to_scratch"]["ci95"][0] > 0  # pooled, 32/40 vs 10/40 excludes 0, but
    # paired over 2 seeds (+.6, +.5): t(.975, 1) = 12.71 makes the interval reach below 0.
    assert full["gap_to_scratch"]["paired"]["t_ci95"][0] < 0
    assert verdict(full) == "no clear difference"
    assert verdict(head) == "no clear difference"  # 10/40 vs 10/40
    low, high = head["gap_to_scratch"]["ci95"]
    assert low < 0 < high

    text = table(list(rows.values()))
    assert "paired +0.55 [-0.09, +1.00]  no clear difference" in text  # t cut at 1
    assert "reach                 17/20 (0.85)" in text
    assert "push                  15/20 (0.75)" in text
    line = json.loads(json_line(list(rows.values()), seeds=[0, 1]))
    assert line["seeds"] == [0, 1] and len(line["rows"]) == 3
    path = bar_chart(list(rows.values()), str(tmp_path / "transfer.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_five_seeds_rates_stay_apart_from_the_gap_in_the_table():
    # Five seeds' rates take 24 characters: the column once ran them into the gap
    # ("0.91+0.06") in the 2026-11-28 validation report.
    rates = {0: 18, 1: 17, 2: 12, 3: 15, 4: 18}
    results = results_of(
        {("full", s): {"reach": (n, 20), "push": (n, 20)} for s, n in rates.items()}
        | {("scratch", s): {"reach": (10, 20), "push": (10, 20)} for s in rates}
    )
    full = next(row for row in summarize(results) if row["mode"] == "full")
    line = next(line for line in table([full]).splitlines() if line.startswith("heldout"))
    seeds_then_gap = line.split("]  ", 1)[1].split()
    assert seeds_then_gap[:6] == ["0.90", "0.85", "0.60", "0.75", "0.90", "+0.30"]


def test_a_mode_worse_than_scratch_is_said_so():
    results = results_of(
        {("full", 0): {"reach": (0, 20), "push": (0, 20)},
         ("scratch", 0): {"reach": (15, 20), "push": (14, 20)}}
    )  # fmt: skip
    full = next(row for row in summarize(results) if row["mode"] == "full")
    assert verdict(full) == "worse than scratch"


def test_arm_results_round_trip_through_json():
    result = results_of({("lora", 2): {"reach": (3, 5), "push": (0, 5)}}, demos=10)[0]
    where = {"commit": "abc123", "cpu": "AMD EPYC, family 25 model 17"}
    offline = {"step": 450, "loss": 0.2, "sampled_mse": 1.5, "train_loss": 0.1}
    result = dataclasses.replace(
        result, provenance={"train": where}, command=("finetune.py", "--config.seed=2"), step=450,
        offline=offline,
    )  # fmt: skip
    again = ArmResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result and again.successes == 3 and again.episodes == 10
    assert again.offline == offline and result.to_json()["offline"] == offline
    unvalidated = dataclasses.replace(result, offline=None)  # no validation at that step
    assert unvalidated.to_json()["offline"] is None
    assert ArmResult.from_json(json.loads(json.dumps(unvalidated.to_json()))) == unvalidated
    named = {**where, "name": "heldout/10demos/lora/seed2 (train)"}
    assert again.arm.demos == 10 and again.provenance_records() == [named]
    older = {k: v for k, v in result.to_json().items() if k in ("target", "variant", "tasks",
             "mode", "seed", "per_task")}  # fmt: skip
    old = ArmResult.from_json(older)  # saved before demos, provenance and commands were kept
    assert old.provenance_records() == [{"name": "heldout/lora/seed2"}] and old.command == ()
    assert again.step == 450 and old.step is None and old.offline is None


def curve_results() -> list[ArmResult]:
    """Like issue 42's reading: three seeds, fine-tuned below scratch by .13, .27 and .13 at 50
    demonstrations (15 episodes per task and seed), and above it at 5."""
    per_seed = {  # seed: (full, scratch) successes per task out of 15, for reach and push
        50: {0: ((10, 11), (12, 13)), 1: ((7, 8), (11, 12)), 2: ((11, 10), (13, 12))},
        5: {0: ((9, 9), (3, 2)), 1: ((8, 10), (4, 4)), 2: ((9, 8), (2, 5))},
    }
    results = []
    for demos, seeds in per_seed.items():
        for seed, arms in seeds.items():
            for mode, (reach, push) in zip(("full", "scratch"), arms, strict=True):
                per = {"reach": (reach, 15), "push": (push, 15)}
                results += results_of({(mode, seed): per}, demos=demos)
    target = results[0].arm.target
    results.append(ArmResult(Arm(target, "zero_shot", 0), {"reach": (3, 15), "push": (0, 15)}))
    return results


def test_a_curve_pairs_each_seed_with_its_scratch_arm_and_intervals_over_seeds(tmp_path):
    rows = summarize(curve_results())
    by = {(row["demos"], row["mode"]): row for row in rows}
    gap = by[50, "full"]["gap_to_scratch"]
    # Per seed: full (21, 15, 21)/30 against scratch (25, 23, 25)/30.
    assert gap["paired"]["seeds"] == [0, 1, 2]
    assert gap["paired"]["differences"] == pytest.approx([-4 / 30, -8 / 30, -4 / 30], abs=1e-4)
    # By hand: mean -16/90; sd of the differences 4/30/sqrt(3); t(.975, 2) = 4.302653.
    mean, half = -16 / 90, 4.302653 * (4 / 30 / 3**0.5) / 3**0.5
    assert gap["paired"]["mean"] == pytest.approx(mean, abs=1e-4)
    assert gap["paired"]["t_ci95"] == pytest.approx([mean - half, mean + half], abs=1e-4)
    assert gap["diff"] == pytest.approx((57 - 73) / 90, abs=1e-4)  # pooled, beside it
    assert gap["paired"]["t_ci95"][0] < gap["ci95"][0]  # the seeds' interval is the wider
    assert verdict(by[50, "full"]) == "no clear difference"  # the paired interval reaches 0
    assert verdict(by[5, "full"]) == "beats scratch"
    assert gap["scratch_demos"] == 50 and by[5, "full"]["gap_to_scratch"]["scratch_demos"] == 5
    push = by[5, "full"]["per_task"]["push"]["gap_to_scratch"]["paired"]
    assert push["differences"] == pytest.approx([7 / 15, 6 / 15, 3 / 15], abs=1e-4)
    zero = by[0, "zero_shot"]["gap_to_scratch"]
    assert zero["paired"] is None and zero["scratch_demos"] == 5  # the fewest demonstrations

    text = table(rows)
    assert "per-seed differences (seeds [0, 1, 2]): -0.13 -0.27 -0.13" in text
    assert "(vs scratch at 5 demos, pooled only)" in text
    assert [(row["demos"], row["mode"]) for row in rows] == [
        (0, "zero_shot"), (5, "full"), (5, "scratch"), (50, "full"), (50, "scratch"),
    ]  # fmt: skip
    line = json.loads(json_line(rows))
    assert line["rows"][3]["by_seed"] == {"0": pytest.approx(21 / 30), "1": 0.5, "2": 0.7}
    path = curve_chart(rows, str(tmp_path / "curve.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_seeds_that_all_agree_are_read_by_the_pooled_interval_not_a_zero_width_one():
    # 20/20 vs 19/20 on both seeds: differences +.05, +.05, t interval [.05, .05].
    rows = summarize(results_of({("full", 0): {"reach": (20, 20)}, ("full", 1): {"reach": (20, 20)},
                                 ("scratch", 0): {"reach": (19, 20)},
                                 ("scratch", 1): {"reach": (19, 20)}}))  # fmt: skip
    full = next(row for row in rows if row["mode"] == "full")
    assert full["gap_to_scratch"]["paired"]["t_ci95"] == [0.05, 0.05]
    assert full["gap_to_scratch"]["ci95"][0] < 0 and verdict(full) == "no clear difference"
    assert "(seeds all equal: pooled read)" in table(rows)


def test_one_seed_has_no_interval_over_seeds_and_reads_the_pooled_one():
    rows = summarize(
        results_of({("full", 0): {"reach": (9, 10)}, ("scratch", 0): {"reach": (1, 10)}})
    )
    full = next(row for row in rows if row["mode"] == "full")
    assert full["gap_to_scratch"]["paired"] is None and verdict(full) == "beats scratch"
