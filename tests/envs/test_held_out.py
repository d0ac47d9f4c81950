"""Held-out tasks and task families (`octo_like.envs.tasks`), the broad pretraining preset that
reads them (`configs/pretrain.py:laptop_broad`), and the transfer benchmark's refusal of a target
whose demonstrations were in pretraining. Pure Python: no simulator, no training."""

from __future__ import annotations

import pytest

from configs import pretrain
from octo_like.data.oxe.mixes import resolve_mix
from octo_like.envs.simulated_data import SimulatedDatasets
from octo_like.envs.tasks import (
    FAMILIES,
    TASKS,
    expand_tasks,
    family_of,
    pretraining_tasks,
)
from octo_like.envs.transfer.plan import OWN_TASKS, Target, check_held_out, plan
from octo_like.training.config import SimulationDataConfig


def test_families_partition_mt50():
    members = [task for family in FAMILIES.values() for task in family]
    assert sorted(members) == sorted(TASKS) and len(members) == len(set(members)) == 50
    assert family_of("door-lock") == "door" and family_of("reach-wall") == "reach"


def test_task_lists_read_names_families_and_all():
    assert expand_tasks("all") == tuple(TASKS)
    assert expand_tasks("family:window,reach") == ("window-close", "window-open", "reach")
    assert expand_tasks(["reach", "family:reach"]) == ("reach", "reach-wall")
    with pytest.raises(ValueError, match="unknown task family 'dor'.*door"):
        expand_tasks("family:dor")
    with pytest.raises(ValueError, match="unknown MetaWorld task 'windw-open'"):
        expand_tasks("windw-open")
    with pytest.raises(ValueError, match="no tasks"):
        expand_tasks(" , ")


def test_held_out_tasks_and_families_leave_pretraining():
    kept = pretraining_tasks("all", "family:door,family:coffee,window-open")
    assert len(kept) == 50 - 4 - 3 - 1
    assert not {"door-open", "coffee-push", "window-open"} & set(kept)
    assert "window-close" in kept  # only the named task of that family
    assert pretraining_tasks("reach,push", "") == ("reach", "push")
    with pytest.raises(ValueError, match="leaves no pretraining task"):
        pretraining_tasks("reach,reach-wall", "family:reach")
    with pytest.raises(ValueError, match="unknown task family"):
        pretraining_tasks("all", "family:nope")


def test_held_out_demonstrations_are_never_collected(tmp_path):
    """The collection (and so its cache key) and the tokenizer's instructions of a simulated
    mix exclude held-out tasks, on every embodiment of the mix."""
    simulation = SimulationDataConfig(
        tasks="family:drawer,family:reach", held_out="drawer-close", cache_dir=str(tmp_path)
    )
    data = SimulatedDatasets("metaworld_broad", simulation)
    for variant in ("front", "default"):
        assert data.collection(variant).tasks == ("drawer-open", "reach", "reach-wall")
    assert not any("close the drawer" in text for text in data.instructions())
    everything = SimulatedDatasets("metaworld_broad", SimulationDataConfig(tasks="family:drawer"))
    assert data.collection("front").fingerprint() != everything.collection("front").fingerprint()


def test_the_broad_preset_pretrains_on_mt50_from_two_embodiments():
    config = pretrain.get_config("laptop_broad")
    assert config.simulation.tasks == "all" and config.simulation.held_out == ""
    assert [spec.name for spec, _ in resolve_mix(config.mix)] == [
        "metaworld_front",
        "metaworld_default",
    ]
    long = pretrain.get_config("laptop_long")
    for key in ("num_steps", "data.batch_size", "optimizer.learning_rate", "model.head.kind"):
        path = key.split(".")
        a, b = config, long
        for part in path:
            a, b = a[part], b[part]
        assert a == b, key  # laptop_long's model and optimizer, grown wide
    with pytest.raises(AttributeError):
        config.simulation.hold_out = "family:door"  # locked: a typo'd key fails


def test_a_target_whose_demonstrations_were_pretrained_on_is_refused():
    pretrained = ("reach", "push", "drawer-open")
    check_held_out([Target("test", "front", ("door-open",))], pretrained, ("front", "default"))
    # A new embodiment may redo known tasks: a new robot, not recall.
    check_held_out([Target("m7", "metric7", ("reach",))], pretrained, ("front", "default"))
    with pytest.raises(ValueError, match="target 'val': push on 'default' were in pretraining"):
        check_held_out(
            [Target("val", "default", ("door-open", "push"))], pretrained, ("front", "default")
        )
    with pytest.raises(ValueError, match="reserved"):
        plan([Target(OWN_TASKS, "front", ("reach",))], ["full"], [0])
