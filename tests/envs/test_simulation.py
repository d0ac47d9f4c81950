"""MetaWorld in spawned workers: demonstrations -> RLDS -> batches, and closed-loop evaluation of
the expert, random actions and a tiny trained checkpoint through the same code path."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import train
from configs import pretrain
from octo_like.data.pipeline import make_pipeline
from octo_like.data.presets import single_dataset_config
from octo_like.envs.agents import ExpertAgent, PolicyAgent, RandomAgent
from octo_like.envs.demos import CollectionConfig, collect_demonstrations
from octo_like.envs.evaluation import EvalConfig, evaluate, told_instruction
from octo_like.envs.tasks import get_task
from octo_like.envs.variants import get_variant
from octo_like.envs.worker import EnvPool, WorkerError
from tests.envs.tiny_runs import shrink_to_seconds

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import evaluate as evaluate_script  # noqa: E402

TASKS = ("reach", "button-press-topdown")


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    config = CollectionConfig(
        tasks=TASKS, episodes_per_task=2, val_episodes_per_task=1, variant="wrist",
        image_encoding="png",
    )  # fmt: skip
    report = collect_demonstrations(str(out), config, workers=2, progress=False)
    return str(out), report


def test_workers_never_import_tensorflow_and_report_errors():
    import tensorflow  # noqa: F401  (the parent has TF loaded, as train.py does)

    with EnvPool(1) as pool:
        (modules,) = pool.call("modules")
        assert not [m for m in modules if m.split(".")[0] in ("tensorflow", "jax")]
        with pytest.raises(WorkerError, match="unknown MetaWorld task 'rech'"):
            pool.call("make", [dict(task="rech", variant="default", image_size=None,
                                    max_episode_steps=10)])  # fmt: skip
        # The worker survives a failed request.
        (made,) = pool.call("make", [dict(task="reach", variant="metric7", image_size=32,
                                          max_episode_steps=10)])  # fmt: skip
        assert made == {"action_dim": 7}


def test_the_first_frame_draws_the_goal_marker_where_the_goal_is():
    """MetaWorld moves the goal site after its reset's last forward pass; `reset` must render
    the marker where the goal is, not where an earlier draw left it. In `front` the goal marker
    is the only yellow (reach) or blue (pick-place) thing: a step that does not move the goal
    must not move those pixels."""
    markers = {  # task -> its goal marker's pixels
        "reach": lambda im: (im[..., 0] > 150) & (im[..., 1] > 150) & (im[..., 2] < 80),
        "pick-place": lambda im: (im[..., 2] > 100) & (im[..., 0] < 60) & (im[..., 1] < 60),
    }

    def marker_centre(task, image):
        rows, cols = np.nonzero(markers[task](image.astype(int)))
        assert rows.size > 0, f"no {task} goal marker in view"
        return np.array([rows.mean(), cols.mean()])

    with EnvPool(1) as pool:
        for task in markers:
            pool.call("make", [dict(task=task, variant="front", image_size=64,
                                    max_episode_steps=10)])  # fmt: skip
            for seed in (0, 1):
                (first,) = pool.call("reset", [dict(seed=seed)])
                (after,) = pool.call("step", [dict(action=np.zeros(4, np.float32))])
                np.testing.assert_allclose(
                    marker_centre(task, first["obs"]["image_primary"]),
                    marker_centre(task, after["obs"]["image_primary"]),
                    atol=0.5,
                    err_msg=f"{task}, seed {seed}",
                )
    assert CollectionConfig(tasks=("reach",), episodes_per_task=2).fingerprint() == "9b151f6625ca"


def test_collection_writes_readable_rlds(collected):
    root, report = collected
    assert report.episodes == {"train": 4, "val": 2} and report.frames > 0
    builder = tfds.builder_from_directory(report.path)
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val")} == report.episodes
    phrasings = {t: get_task(t).instructions for t in TASKS}
    seen_tasks = set()
    for episode in tfds.as_numpy(builder.as_dataset(split="train")):
        steps = list(episode["steps"])
        task = episode["episode_metadata"]["task"].decode()
        seen_tasks.add(task)
        assert episode["episode_metadata"]["variant"] == b"wrist"
        assert steps[0]["is_first"] and steps[-1]["is_last"] and steps[-1]["is_terminal"]
        assert not any(s["is_terminal"] for s in steps[:-1])
        assert {s["language_instruction"].decode() for s in steps} <= set(phrasings[task])
        obs = steps[0]["observation"]
        assert obs["image_primary"].shape == obs["image_wrist"].shape == (64, 64, 3)
        assert obs["state"].shape == (4,) and steps[0]["action"].shape == (4,)
        actions = np.stack([s["action"] for s in steps])
        assert np.all(np.abs(actions) <= 1.0) and actions[:, :3].std() > 0
    assert seen_tasks == set(TASKS)


def test_png_collections_store_exactly_the_frames_the_simulator_renders(collected):
    """A policy in the simulator sees rendered pixels; a png collection trains it on the same
    pixels (jpeg at 64 px blurs a 2-3 px goal marker into the table, see docs/simulation.md)."""
    _, report = collected
    builder = tfds.builder_from_directory(report.path)
    episode = next(iter(tfds.as_numpy(builder.as_dataset(split="train").take(1))))
    metadata = episode["episode_metadata"]
    first = next(iter(episode["steps"]))["observation"]
    with EnvPool(1) as pool:
        pool.call("make", [dict(task=metadata["task"].decode(), variant="wrist",
                                image_size=64, max_episode_steps=10)])  # fmt: skip
        (rendered,) = pool.call("reset", [dict(seed=int(metadata["seed"]))])
    for key in ("image_primary", "image_wrist"):
        np.testing.assert_array_equal(first[key], rendered["obs"][key])


def test_collected_dataset_batches_through_the_pipeline(collected, tmp_path):
    root, _ = collected
    config = single_dataset_config(
        root, "metaworld_wrist", batch_size=4, primary_size=64, wrist_size=32, augment=False,
        shuffle_buffer=16, statistics_cache_dir=str(tmp_path),
    )  # fmt: skip
    pipeline = make_pipeline(config)
    batch = next(iter(pipeline))
    assert batch["observation"]["image_primary"].shape == (4, 2, 64, 64, 3)
    assert batch["observation"]["image_wrist"].shape == (4, 2, 32, 32, 3)
    assert batch["observation"]["proprio"].shape == (4, 2, 4)
    assert batch["action"].shape == (4, 2, 4, 4)
    stats = pipeline.statistics["metaworld_wrist"].to_dict()
    assert len(stats["action"]["mean"]) == 4


def test_expert_and_random_through_the_evaluation_loop(tmp_path):
    config = EvalConfig(
        tasks=("reach",), episodes_per_task=2, max_episode_steps=120, workers=2,
        video_dir=str(tmp_path / "videos"), video_episodes=1, video_format="gif",
    )  # fmt: skip
    expert = evaluate(ExpertAgent(), config, progress=False)
    assert expert.per_task()["reach"]["successes"] == 2
    assert [e.episode for e in expert.episodes] == [0, 1]
    (video,) = [e.video for e in expert.episodes if e.video]
    assert video.endswith("reach_000_success.gif") and pathlib.Path(video).stat().st_size > 0
    short = EvalConfig(tasks=("reach",), episodes_per_task=2, max_episode_steps=15, workers=2)
    floor = evaluate(RandomAgent(get_variant("default"), seed=0), short, progress=False)
    assert all(e.length <= 15 for e in floor.episodes)
    # Each episode keeps how far from the goal it ended: within reach's 5 cm on a success,
    # beyond it on a random agent's failure.
    assert all(e.final_distance <= 0.05 for e in expert.episodes)
    assert all(e.final_distance > 0.05 for e in floor.episodes if not e.success)
    assert floor.per_task()["reach"]["failure_final_distance"] > 0.05
    assert [e.seed for e in floor.episodes] == [e.seed for e in expert.episodes]  # same scenes


def test_expert_goal_is_the_expert_s_last_frame_and_leaves_the_scene_untouched():
    with EnvPool(1) as pool:
        pool.call("make", [dict(task="reach", variant="wrist", image_size=32,
                                max_episode_steps=120)])  # fmt: skip
        (first,) = pool.call("reset", [dict(seed=5)])
        (played,) = pool.call("expert_goal", [dict(seed=5)])
        (again,) = pool.call("reset", [dict(seed=5)])
    goal = played["goal"]
    assert played["expert_success"] is True
    assert sorted(goal) == ["primary", "wrist"]  # keyed by camera, as create_tasks takes them
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for image in goal.values())
    assert not np.array_equal(goal["primary"], first["obs"]["image_primary"])  # the arm moved
    for key, value in first["obs"].items():  # the next reset is the same scene, untouched
        np.testing.assert_array_equal(again["obs"][key], value)


def test_demonstrations_can_keep_the_expert_holding_the_solved_task():
    """steps_after_success: the same episode, then exactly k more expert steps after success;
    the cache key of a collection without them is the one it had before the option existed."""
    job = dict(task="reach", variant="default", image_size=32, max_episode_steps=120,
               expert_noise=0.0, seed=3)  # fmt: skip
    with EnvPool(1) as pool:
        (plain,) = pool.call("expert_episode", [job])
        (held,) = pool.call("expert_episode", [dict(job, steps_after_success=12)])
    assert plain["success"] and held["success"]
    assert held["length"] == plain["length"] + 12
    np.testing.assert_array_equal(held["action"][: plain["length"]], plain["action"])
    np.testing.assert_array_equal(
        held["observation"]["image_primary"][: plain["length"]],
        plain["observation"]["image_primary"],
    )
    base = CollectionConfig(tasks=("reach",), episodes_per_task=2)
    assert base.fingerprint() == "9b151f6625ca"
    assert (
        CollectionConfig(
            tasks=("reach",), episodes_per_task=2, steps_after_success=12
        ).fingerprint()
        != base.fingerprint()
    )
    with pytest.raises(ValueError, match="steps_after_success must lie in \\[0, 100\\]"):
        CollectionConfig(tasks=("reach",), episodes_per_task=2, steps_after_success=101)


def test_expert_labels_keep_the_noisy_rollout_and_record_the_noise_free_action():
    """action_labels="expert" (DART): the arm moves exactly as with executed labels (one noise
    draw per step either way); only the recorded actions lose the noise."""
    job = dict(task="reach", variant="default", image_size=32, max_episode_steps=120,
               expert_noise=0.1, seed=3)  # fmt: skip
    with EnvPool(1) as pool:
        (executed,) = pool.call("expert_episode", [job])
        (labelled,) = pool.call("expert_episode", [dict(job, action_labels="expert")])
        with pytest.raises(WorkerError, match="action_labels must be one of"):
            pool.call("expert_episode", [dict(job, action_labels="clean")])
    assert labelled["length"] == executed["length"]
    for key, frames in executed["observation"].items():
        np.testing.assert_array_equal(labelled["observation"][key], frames)
    noise = executed["action"][:, :3] - labelled["action"][:, :3]
    unclipped = np.all(np.abs(executed["action"][:, :3]) < 1.0, axis=1)
    assert 0.07 < noise[unclipped].std() < 0.13  # the collection's noise std, 0.1
    np.testing.assert_array_equal(executed["action"][:, 3], labelled["action"][:, 3])
    base = CollectionConfig(tasks=("reach",), episodes_per_task=2)
    dart = CollectionConfig(tasks=("reach",), episodes_per_task=2, action_labels="expert")
    assert base.fingerprint() == "9b151f6625ca" != dart.fingerprint()
    with pytest.raises(ValueError, match="action_labels must be one of"):
        CollectionConfig(tasks=("reach",), episodes_per_task=2, action_labels="clean")


def test_expert_gain_scales_the_experts_corrections_before_clipping():
    """expert_gain k: from the same state the xyz command is clip(k x the expert's); grip is
    untouched; the default keeps old cache keys and a gain <= 0 is named."""
    job = dict(task="reach", variant="default", image_size=32, max_episode_steps=120,
               expert_noise=0.0, seed=3)  # fmt: skip
    with EnvPool(1) as pool:
        (plain,) = pool.call("expert_episode", [job])
        (strong,) = pool.call("expert_episode", [dict(job, expert_gain=3.0)])
    first, scaled = plain["action"][0], strong["action"][0]  # the same first state
    np.testing.assert_allclose(scaled[:3], np.clip(3.0 * first[:3], -1.0, 1.0), atol=1e-6)
    assert scaled[3] == first[3]
    assert strong["success"] and strong["length"] < plain["length"]  # it closes in faster
    base = CollectionConfig(tasks=("reach",), episodes_per_task=2)
    assert base.fingerprint() == "9b151f6625ca"
    assert CollectionConfig(tasks=("reach",), episodes_per_task=2, expert_gain=3.0).fingerprint() \
        != base.fingerprint()  # fmt: skip
    with pytest.raises(ValueError, match="expert_gain must be > 0"):
        CollectionConfig(tasks=("reach",), episodes_per_task=2, expert_gain=0.0)


class _RecordingAgent(ExpertAgent):
    def __init__(self):
        self.resets = []

    def reset(self, slot, task, instruction, goal=None):
        self.resets.append((task, instruction, goal))


@pytest.mark.parametrize("conditioning", ["goal", "language+goal", "language"])
def test_evaluation_tells_the_agent_the_task_as_configured(conditioning):
    config = EvalConfig(
        tasks=("reach",), episodes_per_task=1, max_episode_steps=120, workers=1,
        conditioning=conditioning,
    )  # fmt: skip
    agent = _RecordingAgent()
    report = evaluate(agent, config, progress=False)
    ((task, instruction, goal),) = agent.resets
    assert report.conditioning == conditioning and report.to_json()["conditioning"] == conditioning
    assert (instruction is not None) == ("language" in conditioning)
    assert (goal is not None) == ("goal" in conditioning)
    if goal is not None:
        assert list(goal) == ["primary"] and goal["primary"].shape == (64, 64, 3)
    assert report.per_task()["reach"]["successes"] == 1  # the expert still solves the scene


@pytest.mark.parametrize(
    "which, expected",
    [
        ("canonical", "reach to the goal"),
        ("alternate", "move the gripper to the target position"),
        ("empty", ""),
    ],  # fmt: skip
)
def test_the_agent_hears_the_configured_instruction(which, expected):
    """The language-interference check: the same scene told in other words, or in none."""
    assert told_instruction("reach", which) == expected
    config = EvalConfig(tasks=("reach",), episodes_per_task=1, max_episode_steps=2, workers=1,
                        instruction=which)  # fmt: skip
    agent = _RecordingAgent()
    report = evaluate(agent, config, progress=False)
    assert [instruction for _, instruction, _ in agent.resets] == [expected]
    assert report.to_json()["instruction"] == which
    assert ("instruction)" in report.table()) == (which != "canonical")
    with pytest.raises(ValueError, match="instruction must be one of .* got 'none'"):
        EvalConfig(tasks=("reach",), instruction="none")


class _SizedAgent(RandomAgent):
    """Random actions from an agent trained on `render_size` px images; records what it sees."""

    def __init__(self, render_size):
        super().__init__(get_variant("default"))
        self.render_size, self.seen = render_size, set()

    def act(self, slots, observations, infos):
        self.seen |= {obs["image_primary"].shape for obs in observations}
        return super().act(slots, observations, infos)


@pytest.mark.parametrize("configured, expected", [(None, 48), (32, 32)])
def test_a_policy_sees_images_rendered_at_the_size_it_was_trained_on(configured, expected):
    """Without its own image_size an evaluation renders at the agent's training size (a 96 px
    policy scored on upsampled 64 px renders would be scored on images it never saw)."""
    config = EvalConfig(tasks=("reach",), episodes_per_task=1, max_episode_steps=3, workers=1,
                        image_size=configured)  # fmt: skip
    agent = _SizedAgent(48)
    report = evaluate(agent, config, progress=False)
    assert agent.seen == {(expected, expected, 3)}
    assert report.to_json()["image_size"] == expected
    assert f"images rendered at {expected} px" in report.table()


def test_the_render_size_is_the_largest_image_side_a_model_reads():
    from octo_like.envs.agents import render_size_of

    spec = {"observation": {"image_primary": {"shape": [2, 96, 96, 3]},
                            "image_wrist": {"shape": [2, 32, 32, 3]},
                            "proprio": {"shape": [2, 4]}}}  # fmt: skip
    assert render_size_of(spec) == 96
    assert render_size_of({"observation": {"proprio": {"shape": [2, 4]}}}) is None


def test_a_goal_the_expert_did_not_reach_is_reported(caplog):
    config = EvalConfig(
        tasks=("reach",), episodes_per_task=1, max_episode_steps=3, workers=1, conditioning="goal"
    )
    with caplog.at_level("WARNING", logger="octo_like.envs.evaluation"):
        evaluate(RandomAgent(get_variant("default")), config, progress=False)
    assert "reach episode 0" in caplog.text and "did not finish the scene" in caplog.text


def test_unknown_conditioning_is_named():
    with pytest.raises(ValueError, match="conditioning must be one of .* got 'goals'"):
        EvalConfig(tasks=("reach",), conditioning="goals")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """The laptop preset (what `make train` runs) shrunk to seconds: one task, 2 steps."""
    tmp = tmp_path_factory.mktemp("tiny_sim_run")
    config = pretrain.get_config("laptop")
    shrink_to_seconds(config, tmp, tasks="reach")
    config.simulation.val_episodes_per_task = 1
    config.simulation.eval_every = 1  # closed-loop success at steps 1 and 2 (issue 12)
    config.simulation.eval_episodes = 1
    config.simulation.eval_max_steps = 8
    train.main(config, str(tmp / "run"))
    return str(tmp / "run" / "checkpoints")


@pytest.mark.slow
def test_closed_loop_success_is_logged_during_training(tiny_checkpoint):
    from octo_like.training.run.metrics import read_jsonl

    run = pathlib.Path(tiny_checkpoint).parent
    entries = [e for e in read_jsonl(str(run / "metrics.jsonl")) if e.get("split") == "sim"]
    assert [e["step"] for e in entries] == [1, 2]
    for entry in entries:
        assert 0.0 <= entry["success_rate"] <= 1.0 and "success/reach" in entry
        assert entry["success_ci_low"] <= entry["success_rate"] <= entry["success_ci_high"]
        assert entry["seconds"] > 0


def test_tiny_checkpoint_rolls_out_in_worker_processes(tiny_checkpoint):
    from octo_like.inference import Policy

    policy = Policy.from_checkpoint(tiny_checkpoint, execution="receding", exec_horizon=2)
    assert policy.dataset_name == "metaworld_default"
    config = EvalConfig(tasks=("reach", "push"), episodes_per_task=1, max_episode_steps=8)
    report = evaluate(PolicyAgent(policy), config, progress=False)
    assert [(e.task, e.length <= 8) for e in report.episodes] == [("reach", True), ("push", True)]
    # Chunks of 4 executed 2 at a time: about one batched call per 2 steps of both envs.
    assert report.latency_ms["count"] >= 4
    assert report.env_steps == sum(e.length for e in report.episodes)


def test_evaluate_script_with_temporal_ensembling(tiny_checkpoint, tmp_path, capsys):
    report = evaluate_script.main([
        "--checkpoint", tiny_checkpoint, "--tasks", "reach", "--episodes", "2",
        "--max_steps", "6", "--execution", "ensemble", "--no_progress",
        "--chart", str(tmp_path / "chart.png"),
    ])  # fmt: skip
    assert report.variant == "default" and len(report.episodes) == 2
    assert report.agent == "policy:run@2", report.agent  # <run>/checkpoints, step 2
    # Temporal ensembling asks for a new chunk at every step.
    assert report.latency_ms["count"] >= report.env_steps / 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("{") and '"per_task"' in out[-1]
    assert (tmp_path / "chart.png").exists()


def test_goal_conditioned_evaluation_feeds_the_policy_goal_images(tiny_checkpoint, monkeypatch):
    """--conditioning goal: the model gets the expert's last frame as its primary goal image and
    no instruction (language masked out), batched over the environments."""
    from octo_like.inference import Policy

    seen = []
    original = Policy.predict_chunks

    def spy(self, observations, tasks):
        seen.append(tasks)
        return original(self, observations, tasks)

    monkeypatch.setattr(Policy, "predict_chunks", spy)
    report = evaluate_script.main([
        "--checkpoint", tiny_checkpoint, "--tasks", "reach,push", "--episodes", "1",
        "--max_steps", "4", "--conditioning", "goal", "--no_progress",
    ])  # fmt: skip
    assert report.conditioning == "goal" and len(report.episodes) == 2
    assert seen and all(isinstance(tasks, dict) for tasks in seen)
    masks = seen[0]["pad_mask_dict"]
    assert masks["image_primary"].all() and not masks["language_instruction"].any()
    goals = seen[0]["image_primary"]
    assert goals.shape[0] == 2 and goals.dtype == np.uint8 and goals.any()


def test_scenes_are_keyed_by_task_name_not_position():
    """A task's evaluation scenes do not change when the task list is reordered or extended."""
    from octo_like.envs.evaluation import episode_jobs

    def seeds(tasks):
        config = EvalConfig(tasks=tasks, episodes_per_task=3, workers=1)
        return {(task, i): seed for task, i, seed in episode_jobs(config)}

    alone = seeds(("reach",))
    mixed = seeds(("push", "drawer-open", "reach"))
    assert {k: v for k, v in mixed.items() if k[0] == "reach"} == alone
    assert seeds(("drawer-open", "push")) == {k: v for k, v in mixed.items() if k[0] != "reach"}
    assert len(set(mixed.values())) == len(mixed)  # tasks and episodes get different scenes
    other_seed = EvalConfig(tasks=("reach",), episodes_per_task=3, workers=1, seed=1)
    assert {s for _, _, s in episode_jobs(other_seed)}.isdisjoint(alone.values())


def test_agent_names_identify_the_run_and_step():
    from octo_like.envs.evaluate_cli import agent_name

    assert agent_name("runs/laptop/checkpoints", 300) == "policy:laptop@300"
    assert agent_name("runs/laptop/checkpoints/", 5) == "policy:laptop@5"
    assert agent_name("/exports/my_policy", None) == "policy:my_policy@latest"


@pytest.mark.slow
def test_transfer_benchmark_plumbing_on_a_tiny_budget(tiny_checkpoint, tmp_path, monkeypatch):
    """The transfer benchmark (scripts/benchmark_transfer.py's run) end to end on a tiny budget:
    a new embodiment with a camera the pretrained model lacks, a fine-tuning mode and scratch,
    results saved and reused."""
    from flax import nnx

    import train
    from octo_like.envs.transfer import transfer_arms, transfer_scope
    from octo_like.envs.transfer.transfer_benchmark import parse_args
    from octo_like.envs.transfer.transfer_benchmark import run as run_benchmark
    from octo_like.model.base_checkpoint import flat_params
    from octo_like.model.octo_model import OctoModel
    from tests.envs.transfer_scripts import entry_points

    workdir = tmp_path / "transfer"
    argv = [
        "--workdir", str(workdir), "--pretrained", tiny_checkpoint,
        "--target", "wrist=reach@wrist", "--modes", "head_only", "--demos", "2",
        "--val_demos", "1", "--steps", "2", "--batch_size", "8", "--seeds", "3",
        "--eval_episodes", "1", "--max_steps", "4", "--no_zero_shot",
        f"--finetune_arg=--config.data.statistics_cache_dir={tmp_path / 'stats'}",
        "--finetune_arg=--config.data.shuffle_buffer=64",
    ]  # fmt: skip
    programs = entry_points()
    rows = run_benchmark(parse_args(argv), programs)
    assert [(r["target"], r["mode"], r["seeds"]) for r in rows] == [
        ("wrist", "head_only", [3]), ("wrist", "scratch", [3]),
    ]  # fmt: skip
    assert all(r["episodes"] == 1 and r["variant"] == "wrist" for r in rows)
    assert "gap_to_scratch" in rows[0] and "gap_to_scratch" not in rows[1]
    line = (workdir / "transfer.jsonl").read_text().strip()
    assert json.loads(line)["rows"] == json.loads(json.dumps(rows))
    assert (workdir / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    assert "head_only" in (workdir / "transfer.txt").read_text()
    # Each arm keeps its evaluated step's offline numbers (--val_demos 1 validates at step 2).
    for mode in ("head_only", "scratch"):
        saved = workdir / "results" / "receding-4steps-1eps-seed0" / "wrist" / "2demos" / mode
        offline = json.loads((saved / "seed3.json").read_text())["offline"]
        assert offline["step"] == 2 and offline["loss"] > 0 and "sampled_mse" in offline, mode

    # Both arms see the wrist camera through a new tokenizer; only head_only starts pretrained.
    base_model = OctoModel.load_pretrained(tiny_checkpoint)
    pretrained = flat_params(nnx.state(base_model.module, nnx.Param))
    kernel = "transformer/transformer/blocks/0/mlp/fc1/kernel"
    for mode, reused in (("head_only", True), ("scratch", False)):
        run = workdir / "runs" / "wrist" / "2demos" / mode / "seed3" / "checkpoints"
        model = OctoModel.load_pretrained(str(run))
        assert model.config.cameras == ("primary", "wrist") and model.config.action_dim == 4
        params = flat_params(nnx.state(model.module, nnx.Param))
        assert np.array_equal(params[kernel], pretrained[kernel]) == reused, mode

    # A rerun reuses every finished arm: nothing trains again.
    monkeypatch.setattr(transfer_arms, "train_arm", lambda *a: pytest.fail("retrained"))
    assert run_benchmark(parse_args(argv), programs) == rows

    # A target without @VARIANT runs on the pretraining robot: the checkpoint's own variant.
    import dataclasses

    from octo_like.training.finetuning import finetune_config

    info = finetune_config.read_pretrained(tiny_checkpoint)
    assert info.dataset_names == ("metaworld_default",)
    assert transfer_scope.pretrained_variant(info) == "default"
    front = dataclasses.replace(info, dataset_names=("metaworld_front",))
    assert transfer_scope.pretrained_variant(front) == "front"

    # The pretraining command it would run parses as a train.py command line.
    args = parse_args(["--workdir", str(workdir), "--pretrain_steps", "7"])
    pretrain_argv = transfer_scope.pretrain_argv(args, programs.config_dir)
    config, run_dir, _, _ = train.parse_command_line(pretrain_argv)
    assert config.num_steps == 7 and config.simulation.episodes_per_task == 12  # the preset's
    assert run_dir == str(workdir / "pretrain")


def test_in_training_evaluation_runs_in_the_mixs_embodiment():
    """A stereo-pretrained policy is evaluated with both of its cameras, not the default one."""
    from octo_like.envs.training_eval import ClosedLoopEval
    from octo_like.training.config import SimulationDataConfig

    simulation = SimulationDataConfig(eval_every=100)
    variants = {
        mix: ClosedLoopEval.from_simulation(simulation, mix).variant
        for mix in (
            "metaworld",
            "metaworld_cross",
            "metaworld_stereo",
            "metaworld_default_wrist",
            "metaworld_front",
            "metaworld_front_wrist",
        )  # fmt: skip
    }
    assert variants == {"metaworld": "default", "metaworld_cross": "default",
                        "metaworld_stereo": "stereo",
                        "metaworld_default_wrist": "default_wrist",
                        "metaworld_front": "front",
                        "metaworld_front_wrist": "front_wrist"}  # fmt: skip
    with pytest.raises(ValueError, match="bridge_dataset.*not a simulated"):
        ClosedLoopEval.from_simulation(simulation, "bridge")
    # Rollouts render at the demonstrations' size, not the variant's default.
    larger = SimulationDataConfig(eval_every=100, image_size=96)
    assert ClosedLoopEval.from_simulation(larger, "metaworld").image_size == 96
