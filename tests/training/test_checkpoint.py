"""Checkpoints: bit-exact (sharded) round trips, retention, incomplete steps, model loading,
and the workdir as the run's identity."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from octo_like.model.config import HeadConfig, LanguageConfig, ModelConfig, ProprioTokenizerConfig
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.octo_model import OctoModel
from octo_like.training.checkpoints.checkpoint import (
    CheckpointConfig,
    Checkpointer,
    CheckpointSaveError,
    check_workdir,
)
from tests.conftest import REPO
from tests.model.test_octo_model import statistics_entry
from tests.xla_flags import xla_flags

SPEC = {"observation": {"proprio": {"shape": [2, 5], "dtype": "float32"}}, "task": {}}


def meta() -> dict:
    """Non-array items; the config is only parsed, so any valid ModelConfig works."""
    return {
        "model_config": ModelConfig(language=LanguageConfig(encoder="none")).to_dict(),
        "dataset_statistics": {"toy": {"n": np.int64(3)}},
        "input_spec": SPEC,
    }


def sharded_state(mesh) -> dict:
    rng = np.random.default_rng(0)
    put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
    return {
        "step": put(jnp.int32(17), P()),
        "params": {
            "w": put(rng.normal(size=(8, 12)).astype(np.float32), P("batch", "fsdp")),
            "b": put(rng.normal(size=(12,)).astype(jnp.bfloat16), P("fsdp")),
        },
        "opt_state": (
            put(rng.integers(-5, 5, (4, 8)).astype(np.int32), P(None, "fsdp")),
            {"mu": put(rng.normal(size=(8, 12)).astype(np.float32), P())},
        ),
    }


def abstract(state, shardings=None):
    shardings = shardings or jax.tree.map(lambda x: x.sharding, state)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                        shardings)  # fmt: skip


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def assert_bit_identical(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_async_sharded_round_trip_is_bit_exact_on_target_shardings(tmp_path):
    mesh = jax.make_mesh((2, 4), ("batch", "fsdp"))
    state = sharded_state(mesh)
    expected = jax.tree.map(np.asarray, state)
    directory = str(tmp_path / "checkpoints")
    with Checkpointer(directory, CheckpointConfig(save_every=10, async_save=True)) as ckpt:
        assert ckpt.latest_step() is None
        assert not ckpt.save(17, state, params=state["params"], **meta())  # not a multiple of 10
        assert ckpt.save(17, state, params=state["params"], force=True, **meta())
        # The train step donates its input: the save must already hold its own copy.
        jax.tree.map(lambda x: x.delete(), state)
        ckpt.wait()
        assert ckpt.latest_step() == 17
        same = ckpt.restore(17, abstract(sharded_state(mesh)))
        assert_bit_identical(same, expected)
        for leaf, want in zip(
            jax.tree.leaves(same), jax.tree.leaves(sharded_state(mesh)), strict=True
        ):
            assert leaf.sharding == want.sharding
        # Onto other shardings (e.g. a different mesh layout): values still bit-identical.
        other = NamedSharding(jax.make_mesh((4, 2), ("batch", "fsdp")), P("fsdp"))
        reshard = jax.tree.map(lambda x: other if x.ndim and x.shape[0] % 2 == 0 else x.sharding,
                               sharded_state(mesh))  # fmt: skip
        moved = ckpt.restore(17, abstract(sharded_state(mesh), reshard))
        assert_bit_identical(moved, expected)
        assert moved["params"]["w"].sharding == other
    saved = read_json(os.path.join(directory, "17", "dataset_statistics", "metadata"))
    assert saved == {"toy": {"n": 3}}


def test_a_checkpointer_whose_last_save_failed_still_releases_everything(tmp_path, monkeypatch):
    """close() raises the failed save's error, and still stops orbax's threads and removes its
    notice filter from the process-wide absl logger; closing again does nothing."""
    absl = logging.getLogger("absl")
    before = list(absl.filters)
    with Checkpointer(str(tmp_path / "ok"), CheckpointConfig(save_every=1)):
        assert len(absl.filters) == len(before) + 1  # orbax's expected notices, while open
    assert absl.filters == before

    ckpt = Checkpointer(str(tmp_path / "failing"), CheckpointConfig(save_every=1))
    released = []
    close_manager = ckpt._manager.close
    monkeypatch.setattr(ckpt._manager, "close", lambda: (released.append(1), close_manager()))

    def disk_gone() -> None:  # what orbax raises when the last async save failed
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt._manager, "wait_until_finished", disk_gone)
    with pytest.raises(CheckpointSaveError, match="the disk is full"):
        ckpt.close()
    assert released == [1] and absl.filters == before
    ckpt.close()
    assert released == [1]

    # One that cannot open its directory (a file is in the way) leaves nothing behind either,
    # while its error (which holds the half-made object) is still alive, as in a notebook.
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OSError) as error:
        Checkpointer(str(tmp_path / "a_file" / "checkpoints"), CheckpointConfig(save_every=1))
    assert absl.filters == before, error.traceback[-1]


def test_fresh_process_restores_and_names_mismatched_leaves(tmp_path):
    mesh = jax.make_mesh((2, 4), ("batch", "fsdp"))
    state = sharded_state(mesh)
    with Checkpointer(str(tmp_path), CheckpointConfig(save_every=1)) as ckpt:
        ckpt.save(1, state, params=state["params"], **meta())
        assert_bit_identical(ckpt.restore(1, abstract(state)), state)  # waits for the save
    # A fresh Checkpointer, as in a resumed process, knows the items' handlers and metadata.
    with Checkpointer(str(tmp_path), CheckpointConfig(save_every=1)) as ckpt:
        assert_bit_identical(ckpt.restore(ckpt.latest_step(), abstract(state)), state)
        target = abstract(state)
        target["params"]["w"] = jax.ShapeDtypeStruct(
            (8, 6), jnp.float32, sharding=target["step"].sharding
        )
        del target["params"]["b"]
        expected = (
            r"(?s)2 problems.*params\.b: in the checkpoint, not in the target.*"
            r"params\.w: checkpoint float32\[8, 12\], target float32\[8, 6\]"
        )
        with pytest.raises(ValueError, match=expected):
            ckpt.restore(1, target)
        with pytest.raises(ValueError, match="has no sharding"):
            ckpt.restore(1, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
        with pytest.raises(FileNotFoundError, match="no complete checkpoint for step 2"):
            ckpt.restore(2, abstract(state))


def test_retention_keeps_last_n_and_every_mth(tmp_path):
    state = {"x": jnp.arange(3.0)}
    config = CheckpointConfig(save_every=1, keep_last=2, keep_every=5, async_save=True)
    with Checkpointer(str(tmp_path), config) as ckpt:
        for step in range(1, 24):
            assert ckpt.save(step, state, params=state, **meta())
        assert not ckpt.save(23, state, params=state, force=True, **meta())  # exists already
        assert ckpt.all_steps() == [5, 10, 15, 20, 22, 23]
    on_disk = sorted(int(n) for n in os.listdir(tmp_path) if n.isdigit())
    assert on_disk == [5, 10, 15, 20, 22, 23]
    with Checkpointer(str(tmp_path), CheckpointConfig(save_every=4, keep_last=10)) as ckpt:
        saved = [s for s in range(25, 33) if ckpt.save(s, state, params=state, **meta())]
        assert saved == [28, 32]


def test_incomplete_steps_are_never_resumed_from(tmp_path):
    state = {"x": jnp.arange(3.0)}
    with Checkpointer(str(tmp_path), CheckpointConfig(save_every=1)) as ckpt:
        ckpt.save(4, state, params=state, **meta())
        ckpt.wait()
        # An interrupted orbax save (temporary name) and a half-copied step directory.
        tmp_dir = tmp_path / "9.orbax-checkpoint-tmp-1234567"
        shutil.copytree(tmp_path / "4", tmp_dir)
        (tmp_path / "12" / "train_state").mkdir(parents=True)
        assert ckpt.latest_step() == 4
        with pytest.raises(FileNotFoundError, match="step 12"):
            ckpt.restore(12, abstract(state))
    with Checkpointer(str(tmp_path), CheckpointConfig(save_every=1)) as ckpt:
        assert ckpt.latest_step() == 4
        assert ckpt.save(12, state, params=state, **meta())  # replaces the incomplete step
        assert not tmp_dir.exists()  # leftovers of interrupted saves are cleaned up
        assert ckpt.latest_step() == 12


def small_model(language_dir: str) -> OctoModel:
    """Proprio + small language encoder: every item kind, few parameters (fast to init)."""
    config = ModelConfig(
        transformer="dummy",
        image_tokenizers=(),
        proprio=ProprioTokenizerConfig(num_features=8),
        language=LanguageConfig(encoder="small", checkpoint_dir=language_dir, small_width=16,
                                small_depth=1, small_heads=2),
        window=2, action_horizon=4, action_dim=7, head=HeadConfig("mse"),
    )  # fmt: skip
    ones = lambda *shape: np.ones(shape, bool)
    batch = {
        "observation": {
            "proprio": np.zeros((1, 2, 5), np.float32),
            "proprio_pad_mask": ones(1, 2, 5),
            "timestep": np.zeros((1, 2), np.int32),
            "timestep_pad_mask": ones(1, 2),
            "pad_mask_dict": {"proprio": ones(1, 2)},
        },
        "task": {
            "language_instruction": np.array([b"open the drawer"], dtype=object),
            "pad_mask_dict": {"language_instruction": ones(1)},
        },
    }
    return OctoModel.from_config(config, batch, jax.random.key(0), {"toy": statistics_entry()})


def test_training_checkpoint_loads_as_a_pretrained_model(tmp_path):
    model = small_model(write_tiny_t5_checkpoint(str(tmp_path / "t5")))
    params = nnx.state(model.module, nnx.Param)
    train_state = {
        "step": jnp.int32(3),
        "params": params.to_pure_dict(),
        "opt_state": optax.adam(1e-3).init(params.to_pure_dict()),
    }
    directory = str(tmp_path / "checkpoints")
    with Checkpointer(directory, CheckpointConfig(save_every=3)) as ckpt:
        assert ckpt.save(
            3, train_state, params=params, model_config=model.config.to_dict(),
            dataset_statistics=model.dataset_statistics, input_spec=model.input_spec,
        )  # fmt: skip
    shutil.rmtree(tmp_path / "t5")  # the checkpoint must carry its own tokenizer files
    loaded = OctoModel.load_pretrained(directory)
    assert_bit_identical(nnx.state(loaded.module, nnx.Param).to_pure_dict(), params.to_pure_dict())
    assert loaded.input_spec == json.loads(json.dumps(model.input_spec))
    assert loaded.dataset_statistics == json.loads(json.dumps(model.dataset_statistics))
    assert loaded.config.proprio == model.config.proprio and loaded.config.head == model.config.head
    tasks = loaded.create_tasks(texts=["open the drawer"])
    np.testing.assert_array_equal(
        tasks["language_tokens"], model.create_tasks(texts=["open the drawer"])["language_tokens"]
    )


def test_config_validation_is_clear():
    with pytest.raises(ValueError, match="save_every must be >= 1"):
        CheckpointConfig(save_every=0)
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        CheckpointConfig(keep_last=0)
    with pytest.raises(ValueError, match="multiple of save_every"):
        CheckpointConfig(save_every=10, keep_every=25)


def test_check_workdir_new_resume_conflict_overwrite(tmp_path, caplog):
    workdir = str(tmp_path / "run")
    config = {"seed": 0, "optimizer": {"lr": 1e-3, "betas": (0.9, 0.95)}, "mix": "bridge"}
    assert check_workdir(workdir, config, overwrite=False) == "new"
    saved = read_json(os.path.join(workdir, "config.json"))
    assert saved["optimizer"]["betas"] == [0.9, 0.95]
    assert check_workdir(workdir, config, overwrite=False) == "resume"
    assert check_workdir(workdir, config, overwrite=True) == "resume"  # restarts never wipe
    os.makedirs(os.path.join(workdir, "checkpoints", "5"))
    changed = {**config, "optimizer": {"lr": 3e-4, "betas": (0.9, 0.95)}, "extra": 1}
    with pytest.raises(
        ValueError, match=r"2 keys differ: extra: \(absent\) -> 1; optimizer\.lr: 0\.001 -> 0\.0003"
    ):
        check_workdir(workdir, changed, overwrite=False)
    caplog.set_level("WARNING")
    assert check_workdir(workdir, changed, overwrite=True) == "overwritten"
    (old,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.overwritten-")]
    assert (old / "checkpoints" / "5").is_dir() and read_json(old / "config.json")["seed"] == 0
    assert os.listdir(workdir) == ["config.json"]
    assert "moved the old run" in caplog.text
    assert check_workdir(workdir, changed, overwrite=False) == "resume"


def test_check_workdir_refuses_foreign_checkpoints(tmp_path):
    os.makedirs(tmp_path / "run" / "checkpoints" / "100")
    with pytest.raises(ValueError, match="has checkpoints but no config.json"):
        check_workdir(str(tmp_path / "run"), {"a": 1}, overwrite=False)
    assert check_workdir(str(tmp_path / "run"), {"a": 1}, overwrite=True) == "overwritten"


# A child of the two-process test: one CPU device each, one global array split across them.
CHILD = """
import sys
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

port, pid, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
from octo_like.model.config import LanguageConfig, ModelConfig
from octo_like.training.checkpoints.checkpoint import CheckpointConfig, Checkpointer

mesh = jax.make_mesh((2,), ("data",))
values = {"step": np.array(2, np.int32), "w": np.arange(16, dtype=np.float32).reshape(8, 2)}
shardings = {"step": NamedSharding(mesh, P()), "w": NamedSharding(mesh, P("data"))}
state = {k: jax.make_array_from_callback(v.shape, shardings[k], lambda i, v=v: v[i])
         for k, v in values.items()}
meta = dict(model_config=ModelConfig(language=LanguageConfig(encoder="none")),
            dataset_statistics={"toy": {"n": 1}}, input_spec={})
with Checkpointer(directory, CheckpointConfig(save_every=2)) as ckpt:
    assert ckpt.latest_step() is None
    assert not ckpt.save(1, state, params={"w": state["w"]}, **meta)
    assert ckpt.save(2, state, params={"w": state["w"]}, **meta)
    assert ckpt.latest_step() == 2
    target = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k])
              for k, v in values.items()}
    restored = ckpt.restore(2, target)
    for key, array in restored.items():
        assert array.sharding == shardings[key]
        for shard in array.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), values[key][shard.index])
print("child", pid, "ok", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_save_and_restore_one_global_checkpoint(tmp_path):
    directory = str(tmp_path / "checkpoints")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": xla_flags(devices=1)}  # fmt: skip
    port = str(free_port())
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, port, str(pid), directory],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for pid in range(2)
    ]
    outputs = []
    try:
        for child in children:
            outputs.append(child.communicate(timeout=120)[0])
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()  # JAX ignores SIGTERM
                child.wait()
    for pid, (child, output) in enumerate(zip(children, outputs, strict=True)):
        assert child.returncode == 0 and f"child {pid} ok" in output, output[-3000:]
    # The same checkpoint restores in this single process, onto a (2, 4) mesh of 8 devices.
    mesh = jax.make_mesh((2, 4), ("batch", "fsdp"))
    target = {
        "step": jax.ShapeDtypeStruct((), np.int32, sharding=NamedSharding(mesh, P())),
        "w": jax.ShapeDtypeStruct((8, 2), np.float32, sharding=NamedSharding(mesh, P("fsdp"))),
    }
    with Checkpointer(directory, CheckpointConfig(save_every=2)) as ckpt:
        assert ckpt.latest_step() == 2
        restored = ckpt.restore(2, target)
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(16.0).reshape(8, 2))
    assert int(restored["step"]) == 2 and restored["w"].sharding == target["w"].sharding
    assert read_json(os.path.join(directory, "2", "dataset_statistics", "metadata")) == {
        "toy": {"n": 1}
    }


def test_checkpoints_on_a_url_orbax_cannot_write_are_staged_and_pruned(tmp_path):
    """ram:// (like s3://) is not written by orbax: steps go through a local staging directory,
    reach the URL only complete (marker last), follow keep_last/keep_every there, and come back
    down for a restore in a fresh checkpointer."""
    from octo_like import storage
    from tests import memory_fs

    memory_fs.register()
    directory = "ram://staged-checkpoints/run/checkpoints"
    mesh = jax.make_mesh((2, 4), ("batch", "fsdp"))
    state = sharded_state(mesh)
    config = CheckpointConfig(save_every=1, keep_last=2, keep_every=3, async_save=True)
    try:
        with Checkpointer(directory, config) as ckpt:
            staging = ckpt._staged.local
            for step in range(1, 6):
                assert ckpt.save(step, state, params=state["params"], **meta())
            assert ckpt.all_steps() == [3, 4, 5]  # the last two, and every third
        assert not os.path.exists(staging)  # scratch removed on close
        assert storage.listdir(directory) == ["3", "4", "5"]
        # An upload cut short (no finalization marker) is not a checkpoint.
        storage.remove(storage.join(directory, "5", "_CHECKPOINT_METADATA"))
        with Checkpointer(directory, config) as ckpt:
            assert ckpt.latest_step() == 4
            restored = ckpt.restore(4, abstract(state))
        assert_bit_identical(restored, state)
    finally:
        memory_fs.clear("ram://staged-checkpoints")


def test_staging_directories_of_killed_runs_are_removed_at_the_next_start(tmp_path, caplog):
    """Issue 69 item 5: a run on a URL workdir killed before closing left its staging copy
    (65 MB each) in the temp directory forever. A live process's stays; an old unnamed one is
    named with its size."""
    import subprocess

    from octo_like.training.checkpoints.checkpoint_staging import (
        STAGING_PREFIX,
        remove_stale_staging,
    )

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{STAGING_PREFIX}{dead.pid}-abc"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-def"
    legacy = tmp_path / f"{STAGING_PREFIX}x1y2z3"
    for directory in (stale, live, legacy):
        (directory / "7").mkdir(parents=True)
        (directory / "7" / "array").write_bytes(b"0" * 4096)
    with caplog.at_level(logging.INFO):
        assert remove_stale_staging(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and legacy.exists()
    assert f"{legacy}: a checkpoint staging directory of an earlier run" in caplog.text
