"""Drill cases (issue 40): entry points: request containers, command-line typos, server flags and
ports, disk full, an extended run's learning rate."""

from __future__ import annotations

import logging
import socket
import subprocess

from tests.command_lines import TYPOS, nonblank_lines, run_entry
from tests.drill.common import REPO, case, classify_error, expect_error, one_line


def _one_line_refusal(out: subprocess.CompletedProcess, names: str, before: str = "") -> tuple:
    """named: a non-zero exit whose stderr is short, has no traceback and says `names`;
    raw: a traceback; silent: exit 0. `before`: text that must not appear (work done first)."""
    err = out.stderr
    last = nonblank_lines(err)[-1] if nonblank_lines(err) else ""
    if out.returncode == 0:
        return "silent", one_line(f"exit 0: {out.stdout[-200:]}")
    if before and before in err + out.stdout:
        return "raw", one_line(f"exit {out.returncode} after {before!r}: {last}")
    if "Traceback" in err or names not in err:
        return "raw", one_line(f"exit {out.returncode}, {len(nonblank_lines(err))} lines: {last}")
    return "named", one_line(f"exit {out.returncode}: {last}")


def _observation(batch: int = 1) -> dict:
    import numpy as np

    from tests.inference.test_server import window

    return window(np.random.default_rng(0), *((batch,) if batch else ()))


@case("policy-pad-mask-dict-list", "entries")
def pad_mask_dict_list(ctx):
    """`pad_mask_dict` sent as a list of masks (was numpy's 'truth value ... is ambiguous')."""
    import numpy as np

    from octo_like.inference import Policy

    policy = Policy.from_checkpoint(str(ctx.checkpoint), warmup=False)
    observation = {**_observation(), "pad_mask_dict": [np.ones((1, 2), bool)]}
    return expect_error(
        lambda: policy.predict_chunks(observation, ["open"]), r"'pad_mask_dict' must be a map.*list"
    )


@case("server-pad-mask-dict-array", "entries")
def pad_mask_dict_over_the_wire(ctx):
    """The same over the server, as an array: the reply names the field and both types."""
    import numpy as np

    from tests.drill.server import _served

    observation = {**_observation(0), "pad_mask_dict": np.ones(2, bool)}
    with _served(ctx) as (client, _, _):
        try:
            reply = client.request({"observation": observation, "instruction": "open"})
        except Exception as error:  # noqa: BLE001 - the client raises the server's error
            return classify_error(error, r"'pad_mask_dict' must be a map.*array")
    return "silent", one_line(f"answered: {reply}")


def _typo_case(case_id: str, script: str, config: list[str], typo: str, suggestion: str):
    @case(case_id, "entries")
    def run(ctx):
        out = run_entry(script, *config, "--workdir", str(ctx.tmp / "run"), typo)
        outcome, evidence = _one_line_refusal(out, f"did you mean {suggestion}?")
        if outcome == "named" and len(nonblank_lines(out.stderr)) != 1:
            return "raw", one_line(f"{len(nonblank_lines(out.stderr))} lines: {evidence}")
        return outcome, evidence


for _case_id, _typo in TYPOS.items():
    _typo_case(_case_id, *_typo)


@case("serve-max-batch-0", "entries")
def serve_max_batch_zero(ctx):
    """--max_batch 0 is refused by name before the checkpoint loads (was after ~36 s)."""
    out = run_entry(
        "scripts/serve_policy.py", "--checkpoint", str(ctx.checkpoint), "--max_batch", "0"
    )
    return _one_line_refusal(out, "--max_batch must be", before="loaded and compiled")


@case("serve-port-in-use", "entries")
def serve_port_in_use(ctx):
    """A port another process listens on is named before the checkpoint loads."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_entry("scripts/serve_policy.py", "--checkpoint", str(ctx.checkpoint),
                      "--port", str(port))  # fmt: skip
    return _one_line_refusal(out, f"port {port} on 127.0.0.1 is already in use",
                             before="loaded and compiled")  # fmt: skip


def _debug_run(ctx, **overrides):
    import train

    argv = ["train.py", "--config", f"{REPO / 'configs/pretrain.py'}:debug"]
    argv += [f"--config.{key}={value}" for key, value in overrides.items()]
    config, _, _, _ = train.parse_command_line(argv)
    config.data_dir = str(ctx.tmp / "data")
    config.data.statistics_cache_dir = str(ctx.tmp / "stats")
    config.tensorboard = False
    return train.main(config, str(ctx.tmp / "run"))


@case("train-extend-lr-jump", "entries")
def extend_lr_jump(ctx):
    """A finished 4-step run extended to 8: the learning-rate jump at the resumed step is a
    WARNING naming both rates (was one INFO line)."""
    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    _debug_run(ctx, num_steps=4)
    handler = Keep(level=logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        _debug_run(ctx, num_steps=8)
    finally:
        logging.getLogger().removeHandler(handler)
    jumps = [w for w in warnings if "learning-rate schedule" in w]
    if jumps and "from 7.5e-05" in jumps[0] and "to 0.000183" in jumps[0]:
        return "named", one_line(jumps[0])
    return "silent", one_line(f"no WARNING with both rates; warnings: {warnings[:3]}")


@case("train-disk-full", "entries")
def disk_full(ctx):
    """A debug run whose workdir is on a 20 MiB tmpfs (a checkpoint is ~33 MiB): the named
    CheckpointSaveError, alone (was after 118 'Event loop is closed' tracebacks)."""
    mount = ctx.tmp / "small_disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True,
        text=True,
    )  # fmt: skip
    if made.returncode != 0:
        return "skipped", one_line(f"cannot mount a small tmpfs here: {made.stderr}")
    try:
        out = run_entry(
            "train.py", "--config", "configs/pretrain.py:debug", "--workdir", str(mount / "run"),
            f"--config.data_dir={ctx.tmp / 'data'}", "--config.tensorboard=False",
            f"--config.data.statistics_cache_dir={ctx.tmp / 'stats'}", timeout=220,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    noise = out.stderr.count("Event loop is closed")
    named = "the disk is full" in out.stderr and out.returncode != 0
    if named and not noise:
        return "named", one_line(nonblank_lines(out.stderr)[-1])
    if named:
        return "raw", one_line(f"{noise} 'Event loop is closed' lines before the named error")
    return "raw", one_line(f"exit {out.returncode}: {nonblank_lines(out.stderr)[-1:]}")
