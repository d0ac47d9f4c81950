"""Embodiment variants and tasks: unit conversions, registry specs, errors (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from octo_like.data.oxe.mixes import resolve_mix
from octo_like.data.oxe.registry import get_dataset_spec
from octo_like.data.oxe.spec import ActionEncoding
from octo_like.envs import tasks, variants
from octo_like.envs.eval_report import EpisodeResult, EvalReport, wilson_interval


def test_metric7_round_trips_metaworld_actions_in_metres():
    variant = variants.get_variant("metric7")
    env_action = np.array([0.5, -1.0, 0.25, 1.0], np.float32)
    action = variant.from_env_action(env_action)
    assert action.shape == (7,)
    np.testing.assert_allclose(action[:3], [0.005, -0.01, 0.0025], atol=1e-7)
    np.testing.assert_array_equal(action[3:6], 0.0)
    assert action[6] == pytest.approx(1.0)  # grip command 1 -> gripper 1 (close)
    np.testing.assert_allclose(variant.to_env_action(action), env_action, atol=1e-6)
    # Out-of-range commands are clipped to MetaWorld's box, not passed on.
    np.testing.assert_allclose(
        variant.to_env_action(np.array([1, 0, 0, 0, 0, 0, 2.0])), [1, 0, 0, 1]
    )


def test_default_variant_is_metaworlds_own_action_space():
    variant = variants.get_variant("default")
    action = np.array([0.1, 0.2, -0.3, -1.0], np.float32)
    np.testing.assert_array_equal(variant.to_env_action(action), action)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        variant.to_env_action(np.zeros(7))
    with pytest.raises(ValueError, match="non-finite"):
        variant.to_env_action(np.array([np.nan, 0, 0, 0]))


def test_variants_differ_in_cameras_size_and_action_space():
    default, wrist, metric7 = (variants.get_variant(n) for n in ("default", "wrist", "metric7"))
    assert set(wrist.cameras) == {"primary", "wrist"} and set(default.cameras) == {"primary"}
    assert wrist.cameras["primary"] != default.cameras["primary"]
    assert metric7.image_size != default.image_size
    assert (default.action_dim, metric7.action_dim) == (4, 7)


def test_the_registry_describes_what_each_variant_collects():
    """The data layer's literal specs of the simulated datasets (it imports nothing of envs)
    equal the ones the variants derive, so the two never drift apart."""
    from octo_like.data.oxe.registry import SIMULATED_DATASETS

    assert dict(SIMULATED_DATASETS) == variants.dataset_specs()


def test_simulated_datasets_are_in_the_registry_and_mixes():
    spec = get_dataset_spec("metaworld_wrist")
    assert dict(spec.image_keys) == {"primary": "image_primary", "wrist": "image_wrist"}
    assert spec.proprio_key == "state"
    assert spec.action_normalization_mask == (True, True, True, False)
    assert get_dataset_spec("metaworld_metric7").action_encoding is ActionEncoding.EEF_POS
    names = [s.name for s, _ in resolve_mix("metaworld_cross")]
    assert names == ["metaworld_default", "metaworld_wrist"]


def test_the_laptop_presets_read_each_simulated_mix_with_its_cameras():
    """`laptop,metaworld_stereo` tokenizes both fixed cameras; laptop_long drops the random crop
    on every fixed camera (not only primary); an unknown mix names the known ones."""
    from configs import pretrain

    def cameras(arg):
        c = pretrain.get_config(arg)
        tokenizers = [t["camera"] for t in c.model.image_tokenizers]
        crops = {  # the crop's scale range: "on", None (off) or "-" (no augmentation)
            k: "-" if v.augment is None else dict(v.augment).get("random_resized_crop_scale", "on")
            for k, v in c.data.frame.cameras.items()
        }
        return c.mix, tokenizers, crops

    assert cameras("laptop") == ("metaworld", ["primary"], {"primary": "on"})
    assert cameras("laptop,metaworld_stereo") == (
        "metaworld_stereo",
        ["primary", "secondary"],
        {"primary": "on", "secondary": "on"},
    )
    # The 30-minute recipe sees the scene from the front camera, stored losslessly (run Z).
    assert cameras("laptop_long") == ("metaworld_front", ["primary"], {"primary": None})
    assert pretrain.get_config("laptop_long").simulation.image_encoding == "png"
    assert pretrain.get_config("laptop").mix == "metaworld"
    assert cameras("laptop_long,metaworld_stereo")[2] == {"primary": None, "secondary": None}
    assert cameras("laptop_long,metaworld_cross")[2] == {"primary": None, "wrist": "-"}
    assert cameras("laptop_long,metaworld_default_wrist") == (
        "metaworld_default_wrist",
        ["primary", "wrist"],
        {"primary": None, "wrist": "-"},
    )
    assert cameras("laptop_long,metaworld_front_wrist") == (
        "metaworld_front_wrist",
        ["primary", "wrist"],
        {"primary": None, "wrist": "-"},
    )
    assert resolve_mix("metaworld_stereo")[0][0].image_keys["secondary"] == "image_secondary"
    with pytest.raises(ValueError, match="metaworld_stereo"):
        pretrain.get_config("laptop,bridge")


@pytest.mark.parametrize("fixed", ["default", "front"])
def test_a_wrist_variant_adds_a_wrist_camera_to_a_fixed_view(fixed):
    """`default_wrist` and `front_wrist` keep their fixed camera as it is (same camera, zoom,
    pose and goal colour) and add the wrist camera, so a policy's fixed view is the same."""
    alone, both = variants.get_variant(fixed), variants.get_variant(f"{fixed}_wrist")
    assert both.cameras == {"primary": alone.cameras["primary"], "wrist": "gripperPOV"}
    assert both.field_of_view == alone.field_of_view
    assert both.with_cameras(("primary",)).rendering() == alone.rendering()
    assert (both.action_space, both.image_size) == (alone.action_space, alone.image_size)
    spec = get_dataset_spec(f"metaworld_{fixed}_wrist")
    assert dict(spec.image_keys) == {"primary": "image_primary", "wrist": "image_wrist"}
    assert [s.name for s, _ in resolve_mix(f"metaworld_{fixed}_wrist")] == [spec.name]


def test_the_simulation_config_picks_how_collected_frames_are_stored():
    """simulation.image_encoding reaches the collection and its cache key; a typo is named."""
    from octo_like.envs.simulated_data import SimulatedDatasets
    from octo_like.training.config import SimulationDataConfig

    def collection(**kwargs):
        return SimulatedDatasets("metaworld", SimulationDataConfig(**kwargs)).collection("default")

    assert collection().image_encoding == "jpeg"
    assert collection(image_encoding="png").image_encoding == "png"
    assert collection(image_encoding="png").fingerprint() != collection().fingerprint()
    with pytest.raises(ValueError, match="image_encoding must be jpeg or png, got 'pgn'"):
        SimulationDataConfig(image_encoding="pgn")
    assert collection(action_labels="expert").action_labels == "expert"
    with pytest.raises(ValueError, match="action_labels must be executed or expert"):
        SimulationDataConfig(action_labels="clean")
    assert collection(expert_gain=3.0).expert_gain == 3.0
    with pytest.raises(ValueError, match="expert_gain must be > 0"):
        SimulationDataConfig(expert_gain=-1.0)


def test_camera_subset_and_unknown_names_fail_clearly():
    wrist_only = variants.get_variant("wrist").with_cameras(("wrist",))
    assert dict(wrist_only.dataset_spec("mine").image_keys) == {"wrist": "image_wrist"}
    with pytest.raises(ValueError, match="cannot keep"):
        variants.get_variant("default").with_cameras(("wrist",))
    with pytest.raises(ValueError, match="did you mean wrist"):
        variants.get_variant("wirst")
    with pytest.raises(ValueError, match="did you mean push"):
        tasks.parse_tasks("reach,psuh")
    with pytest.raises(ValueError, match="twice"):
        tasks.parse_tasks("reach,reach")


def test_every_task_has_several_instructions():
    for task in tasks.TASKS.values():
        assert len(task.instructions) >= 2
        assert len(set(task.instructions)) == len(task.instructions)
    canonical = [task.instructions[0] for task in tasks.TASKS.values()]
    assert len(set(canonical)) == len(canonical), "two tasks share a canonical instruction"


def test_the_registry_is_metaworlds_mt50_with_its_experts():
    import metaworld.policies
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    assert len(tasks.TASKS) == 50
    assert {t.env_name for t in tasks.TASKS.values()} == set(ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE)
    for task in tasks.TASKS.values():
        expert = metaworld.policies.ENV_POLICY_MAP[task.name + "-v3"]
        assert task.expert == expert.__name__, task.name
    assert tasks.expert_class_name("peg-insert-side") == "SawyerPegInsertionSideV3Policy"
    assert set(tasks.DEFAULT_TASKS) <= set(tasks.TASKS)


def test_every_instruction_word_is_a_shipped_vocabulary_word():
    """The embedded tokenizer keeps shipped words whole, so no MT50 instruction is spelled out."""
    from octo_like.model.language.vocabulary import WORDS

    words = {w for t in tasks.TASKS.values() for text in t.instructions for w in text.split()}
    assert words - set(WORDS) == set()


def test_wilson_interval_matches_closed_form():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(20, 20)[0] == pytest.approx(0.8389, abs=1e-4)


def test_report_table_json_and_chart(tmp_path):
    episodes = [
        EpisodeResult("reach", 0, 1, True, 40),
        EpisodeResult("reach", 1, 2, False, 150, final_distance=0.08),
        EpisodeResult("reach", 2, 4, False, 150, final_distance=0.12),
        EpisodeResult("push", 0, 3, True, 60, final_distance=0.01),
    ]
    report = EvalReport("expert", "default", ("reach", "push"), episodes, 2.0, 250)
    rows = report.per_task()
    assert rows["reach"]["success_rate"] == 1 / 3 and rows["reach"]["mean_length"] == 340 / 3
    # How far failures end from the goal: the median over failed episodes only.
    assert rows["reach"]["failure_final_distance"] == pytest.approx(0.10)
    assert rows["push"]["failure_final_distance"] is None
    assert "10.0" in report.table().splitlines()[2]  # reach's row, in cm
    assert rows["all"]["successes"] == 2 and rows["all"]["episodes"] == 4
    assert "reach" in report.table() and "125 steps/s" in report.table()
    assert '"agent": "expert"' in report.json_line()
    assert (tmp_path / "c.png").exists() is False
    report.bar_chart(str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_a_changed_field_of_view_is_a_new_collection(monkeypatch):
    """Demonstrations are cached by what was rendered: zooming a camera re-collects."""
    import dataclasses

    from octo_like.envs.demos import CollectionConfig

    default = variants.get_variant("default")
    assert default.field_of_view == {"primary": 35.0}
    config = CollectionConfig(tasks=("reach",), episodes_per_task=2)
    before = config.fingerprint()
    stock = dataclasses.replace(default, field_of_view={})
    monkeypatch.setitem(variants.VARIANTS, "default", stock)
    assert config.fingerprint() != before
    assert stock.rendering()["field_of_view"] == {}
    with pytest.raises(ValueError, match="field_of_view for unknown"):
        dataclasses.replace(default, field_of_view={"wrist": 40.0})
    zoomed_wrist = dataclasses.replace(
        variants.get_variant("wrist"), field_of_view={"primary": 30.0, "wrist": 70.0}
    )
    assert zoomed_wrist.with_cameras(("wrist",)).field_of_view == {"wrist": 70.0}


def test_a_placed_camera_sits_where_asked_and_looks_at_its_target():
    """`place_camera` writes a pose MuJoCo reads back: the camera's world position is the one
    asked for, its -z axis points at the look-at point, and its y axis points down (the bottom-up
    buffer is flipped when read, so world +z is up in the image). No rendering: pure kinematics."""
    import mujoco

    from octo_like.envs.metaworld_env import place_camera

    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><camera name="fixed" pos="1 2 3"/>'
        '<body name="arm"><camera name="carried"/><geom size="0.1"/></body></worldbody></mujoco>'
    )
    data = mujoco.MjData(model)
    position, look_at = (0.0, 1.7, 0.7), (0.0, 0.72, 0.12)
    place_camera(model, "fixed", position, look_at)
    mujoco.mj_forward(model, data)
    np.testing.assert_allclose(data.cam_xpos[0], position, atol=1e-9)
    axes = data.cam_xmat[0].reshape(3, 3)
    towards = np.subtract(look_at, position) / np.linalg.norm(np.subtract(look_at, position))
    np.testing.assert_allclose(-axes[:, 2], towards, atol=1e-9)
    assert axes[2, 1] < 0 and abs(axes[2, 0]) < 1e-9  # image up is world up; no roll
    np.testing.assert_allclose(axes, variants.look_at_rotation(position, look_at), atol=1e-9)
    with pytest.raises(ValueError, match="no camera 'missing'"):
        place_camera(model, "missing", position, look_at)
    with pytest.raises(ValueError, match="'carried' is not a fixed world camera"):
        place_camera(model, "carried", position, look_at)
    with pytest.raises(ValueError, match="straight down"):
        variants.look_at_rotation((0, 0, 1), (0, 0, 0))


def test_the_front_view_sees_a_goal_in_the_air_along_its_short_side():
    """`front` moves one camera in front of the table: its line of sight to the goal box runs
    along y, whose range (10 cm) bounds what one view cannot measure, where the default corner
    camera's diagonal ray crosses up to ~22 cm of the box. Its pose is part of the cache key."""
    front, default = variants.get_variant("front"), variants.get_variant("default")
    ((position, look_at),) = front.camera_poses.values()
    goal_low, goal_high = np.array([-0.1, 0.8, 0.05]), np.array([0.1, 0.9, 0.3])  # reach's box

    def ambiguity(ray):  # the longest stretch of `ray` through the goal box
        return min(
            (hi - lo) / abs(r)
            for lo, hi, r in zip(goal_low, goal_high, ray, strict=True)
            if abs(r) > 1e-9
        )

    front_ray = -variants.look_at_rotation(position, look_at)[:, 2]
    corner2_ray = np.array([-0.746, 0.458, -0.484])  # MetaWorld's corner2 line of sight
    assert ambiguity(front_ray) < 0.12 < 0.2 < ambiguity(corner2_ray)
    assert front.rendering()["camera_poses"] == {"primary": [list(position), list(look_at)]}
    assert "camera_poses" not in default.rendering()  # older caches keep their keys
    assert front.with_cameras(("primary",)).camera_poses == front.camera_poses
    assert [s.name for s, _ in resolve_mix("metaworld_front")] == ["metaworld_front"]
    with pytest.raises(ValueError, match="camera_poses for unknown"):
        variants.EmbodimentVariant(
            "bad",
            {"primary": "corner"},
            64,
            "metaworld4",
            "",
            camera_poses={"wrist": (position, look_at)},
        )


def test_staging_a_scene_zooms_places_and_recolours_the_goal():
    """`stage_scene` applies a variant's field of view, camera pose and goal colour to a MuJoCo
    model (MetaWorld's reach draws its goal red, the robot's colour; `front` draws it yellow,
    and only a red one); the colour is part of the collection's cache key. No rendering."""
    import mujoco

    from octo_like.envs.metaworld_env import stage_scene

    xml = (
        '<mujoco><worldbody><camera name="corner4" pos="1 2 3"/>'
        '<site name="goal" rgba="0.8 0 0 1" size="0.02"/></worldbody></mujoco>'
    )
    model = mujoco.MjModel.from_xml_string(xml)
    front = variants.get_variant("front")
    stage_scene(model, front)
    ((position, _),) = front.camera_poses.values()
    assert model.cam_fovy[0] == front.field_of_view["primary"]
    np.testing.assert_allclose(model.cam_pos[0], position)
    np.testing.assert_allclose(model.site_rgba[0], variants.GOAL_YELLOW)
    assert front.rendering()["red_goal_rgba"] == list(variants.GOAL_YELLOW)
    blue = mujoco.MjModel.from_xml_string(xml.replace("0.8 0 0 1", "0 0 0.8 1"))
    stage_scene(blue, front)  # pick-place's blue goal keeps its colour: it tells tasks apart
    np.testing.assert_allclose(blue.site_rgba[0], [0, 0, 0.8, 1])
    untouched = mujoco.MjModel.from_xml_string(xml.replace("corner4", "corner2"))
    stage_scene(untouched, variants.get_variant("default"))
    np.testing.assert_allclose(untouched.site_rgba[0], [0.8, 0, 0, 1])
    with pytest.raises(ValueError, match="no camera 'corner2'"):
        stage_scene(mujoco.MjModel.from_xml_string(xml), variants.get_variant("default"))
    with pytest.raises(ValueError, match="goal_rgba must be 4 values"):
        variants.EmbodimentVariant("bad", {"primary": "corner"}, 64, "metaworld4", "",
                                   goal_rgba=(1.0, 0.0, 2.0, 1.0))  # fmt: skip
