"""Corrupted checkpoints: edits of a copy of a checkpoint the training `Checkpointer` saved
asynchronously (what a run's steps are: orbax commits them after their manifest), verified
healthy first, then loaded by `Policy.from_checkpoint` and checked by
scripts/verify_checkpoint.py (both must refuse); a real training run's steps must verify ok."""

from __future__ import annotations

import json
import os
import shutil

from tests.drill.common import REPO, case, expect_error, one_line

STEP = "3"


def _training_checkpoint(ctx):
    """The drill's tiny model saved at step 3 by the training `Checkpointer` (async, with its
    train state and tokenizer), once per drill workdir: seconds, unlike a training run."""
    target = ctx.root / "training_checkpoints"
    if (ctx.root / "training_checkpoints.done").exists():
        return target
    from flax import nnx

    from octo_like.model.octo_model import OctoModel
    from octo_like.training.checkpoints.checkpoint import CheckpointConfig, Checkpointer

    model = OctoModel.load_pretrained(str(ctx.checkpoint))
    params = nnx.state(model.module, nnx.Param).to_pure_dict()
    shutil.rmtree(target, ignore_errors=True)
    with Checkpointer(str(target), CheckpointConfig(save_every=1)) as checkpointer:
        checkpointer.save(
            int(STEP), {"params": params}, params=params, model_config=model.config,
            dataset_statistics=model.dataset_statistics, input_spec=model.input_spec,
        )  # fmt: skip
    (ctx.root / "training_checkpoints.done").write_text("ok")
    return target


def _copy(ctx):
    target = ctx.tmp / "checkpoints"
    shutil.copytree(_training_checkpoint(ctx), target)
    return target


def _biggest(directory):
    files = [p for p in directory.rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _flip(path, every: int = 64):
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), max(1, len(data) // every)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _load(directory):
    from octo_like.inference import Policy

    return Policy.from_checkpoint(str(directory), warmup=False)


def _verify(directory) -> int:
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    import verify_checkpoint

    return verify_checkpoint.main([str(directory)])


def _healthy_copy(ctx):
    """(copy, None), or (None, the case's result) when the verifier refuses the healthy copy:
    then its refusal of a damaged one means nothing."""
    directory = _copy(ctx)
    code = _verify(directory)
    if code != 0:
        return None, ("silent", f"verify exit {code} on the healthy checkpoint, before the edit")
    return directory, None


def _both(ctx, edit, names: str):
    """Named only if the healthy copy verifies, and then the loader refuses the edited one
    naming `names` AND verify exits non-zero."""
    directory, failed = _healthy_copy(ctx)
    if failed:
        return failed
    edited = edit(directory)
    outcome, evidence = expect_error(lambda: _load(directory), names, silent_if="loaded")
    code = _verify(directory)
    if outcome == "named" and code == 0:
        return "silent", one_line(f"verify exit 0 although load said: {evidence}")
    return outcome, one_line(f"{evidence} | verify exit {code} | edited {edited}")


def _edit_case(case_id: str, edit, names: str) -> None:
    @case(case_id, "checkpoint")
    def run(ctx):
        return _both(ctx, edit, names)


def _flip_params(d):
    path = _biggest(d / STEP / "params")
    _flip(path)
    return path.relative_to(d)


def _truncate_params(d):
    path = _biggest(d / STEP / "params")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path.relative_to(d)


def _delete(name):
    def edit(d):
        path = d / STEP / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return path.relative_to(d)

    return edit


def _flip_tokenizer(d):
    (path,) = [p for p in d.rglob("spiece.model")] or [None]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path.relative_to(d)


def _foreign_config(d):
    """Another model's config (transformer size, head) over this step's weights."""
    path = d / STEP / "config" / "metadata"
    config = json.loads(path.read_text())
    config["transformer"] = "tiny"
    path.write_text(json.dumps(config))
    return path.relative_to(d)


_edit_case("ckpt-flipped-params", _flip_params, r"checksum|corrupt|params")
_edit_case("ckpt-truncated-params", _truncate_params, r"checksum|corrupt|params|size")
_edit_case(
    "ckpt-deleted-metadata",
    _delete("_CHECKPOINT_METADATA"),
    r"unfinished|incomplete|no complete checkpoint",
)
_edit_case("ckpt-flipped-tokenizer", _flip_tokenizer, r"spiece|tokenizer|language_assets")
_edit_case("ckpt-foreign-config", _foreign_config, r"config|checksum")


@case("ckpt-deleted-checksums", "checkpoint")
def deleted_checksums(ctx):
    """No manifest: verify must exit non-zero; a loader must at least warn, naming the risk."""
    import logging

    directory, failed = _healthy_copy(ctx)
    if failed:
        return failed
    (directory / STEP / "checksums.json").unlink()
    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logging.getLogger().addHandler(Keep(level=logging.WARNING))
    outcome, evidence = expect_error(lambda: _load(directory), r"checksums", silent_if="loaded")
    code = _verify(directory)
    warned = [w for w in warnings if "checksums" in w]
    if outcome == "silent" and warned and code != 0:
        return "named", one_line(f"loaded with warning: {warned[0]} | verify exit {code}")
    return outcome, one_line(f"{evidence} | verify exit {code} | warnings {warned[:1]}")


@case("ckpt-empty-dir", "checkpoint")
def empty(ctx):
    (ctx.tmp / "none").mkdir()
    return expect_error(lambda: _load(ctx.tmp / "none"), r"none|no checkpoint|step")


@case("ckpt-kill9-after-save-resume", "kill", good="none-needed")
def kill_after_save(ctx):
    """kill -9 right after a save, newest step corrupted: resume picks a verified one."""
    import sys

    sys.path.insert(0, str(REPO))
    from octo_like.training.checkpoints.checkpoint import CheckpointConfig, Checkpointer
    from tests.training import test_crash_resume as t

    directory = ctx.tmp / "ckpts"
    t.kill_during_saves(directory, after_saved=3, delay=0.05)
    corrupted = t.corrupt_newest_finished_step(directory)
    with Checkpointer(str(directory), CheckpointConfig(save_every=1, keep_last=50)) as ckpt:
        step = ckpt.resume_step()
        if step is None or step >= corrupted:
            return "silent", f"resume step {step} (corrupted {corrupted})"
        ckpt.restore(step, t.state_at(step))
    return "none-needed", f"resumed from verified step {step}; {corrupted} was corrupt"


# ------------------------------------------------------------------ issue 40: the manifest
def _rewrite_manifest(directory, edit) -> None:
    path = directory / STEP / "checksums.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _tampered_entry_deleted(d):
    """A changed parameter file whose manifest entry is deleted (it used to pass, and Policy
    loaded the changed array)."""
    path = _biggest(d / STEP / "params")
    _flip(path)
    name = str(path.relative_to(d / STEP))
    _rewrite_manifest(d, lambda m: m["files"].pop(name))
    return path.relative_to(d)


def _files_table_emptied(d):
    _rewrite_manifest(d, lambda m: m.update(files={}))
    return "checksums.json files table"


def _tokenizer_assets_emptied(d):
    edited = _flip_tokenizer(d)
    _rewrite_manifest(d, lambda m: m.update(assets={}))
    return f"{edited} and the assets table"


_edit_case("ckpt-tampered-entry-deleted", _tampered_entry_deleted, r"not listed in checksums")
_edit_case("ckpt-files-table-emptied", _files_table_emptied, r"files table is empty")
_edit_case(
    "ckpt-tokenizer-assets-emptied",
    _tokenizer_assets_emptied,
    r"language_assets/spiece.model: the step's config reads it",
)


@case("ckpt-training-run-verifies", "checkpoint", good="none-needed")
def training_run_verifies(ctx):
    """A real run (train.py's debug preset, 2 steps, each saved asynchronously): every step must
    verify ok (orbax rewrote _CHECKPOINT_METADATA after the manifest, reported as corrupt)."""
    import sys

    sys.path.insert(0, str(REPO))
    os.environ.setdefault("OCTO_LIKE_TEST_XLA_CACHE", str(ctx.root / "xla_cache"))
    import train
    from tests.training.test_train import debug_config

    config = debug_config(
        str(ctx.root / "synthetic"), str(ctx.tmp / "stats"),
        **{"checkpoint.save_every": 1, "val_split": ""},
    )  # fmt: skip
    checkpoints = ctx.tmp / "run" / "checkpoints"
    train.main(config, str(checkpoints.parent), stop_at_step=2)
    code = _verify(checkpoints)
    steps = sorted(p.name for p in checkpoints.iterdir() if p.name.isdigit())
    if code != 0 or steps != ["1", "2"]:
        return "silent", f"verify exit {code} on a healthy run's steps {steps}"
    return "none-needed", f"verify exit 0 on every step {steps} of a real training run"


@case("ckpt-policy-step-unfinished-higher", "checkpoint", good="none-needed")
def policy_step_with_unfinished_higher(ctx):
    """A higher step directory without orbax's finalization marker (a save running or killed):
    Policy loads the newest finished step and its metadata() must report that one."""
    from octo_like.inference import Policy

    directory = _copy(ctx)
    unfinished = directory / str(int(STEP) + 2)
    shutil.copytree(directory / STEP, unfinished)
    (unfinished / "_CHECKPOINT_METADATA").unlink()
    reported = Policy.from_checkpoint(str(directory), warmup=False).metadata()["step"]
    if reported != int(STEP):
        return "silent", f"metadata step {reported}, loaded {STEP} ({unfinished.name} unfinished)"
    return "none-needed", f"metadata step {reported}: the step loaded, not {unfinished.name}"
