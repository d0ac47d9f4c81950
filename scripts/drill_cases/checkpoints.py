"""Corrupted checkpoints: edits of a copy of the shared tiny checkpoint, then loaded by
`Policy.from_checkpoint` and checked by scripts/verify_checkpoint.py (both must refuse)."""

from __future__ import annotations

import json
import shutil

from drill_cases.common import REPO, case, expect_error, one_line

STEP = "3"


def _copy(ctx):
    target = ctx.tmp / "checkpoints"
    shutil.copytree(ctx.checkpoint, target)
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


def _both(ctx, edit, names: str):
    """Named only if the loader refuses naming `names` AND verify exits non-zero."""
    directory = _copy(ctx)
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

    directory = _copy(ctx)
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
    from octo_like.training.checkpoint import CheckpointConfig, Checkpointer
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
