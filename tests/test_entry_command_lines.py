"""The real command lines of train.py, finetune.py and serve_policy.py refuse a bad command in
one line, before any work: a typo'd config key names the closest key (no 55-line traceback),
and the server's flags and port are checked before its checkpoint is read."""

from __future__ import annotations

import socket

import pytest

from tests.command_lines import FINETUNE, PRETRAIN, TYPOS, nonblank_lines, run_entry, typo_refusal

# (script, its config, a valid override that gets past the command line, the value it then
# stops at inside main)
HEALTHY = [
    ("train.py", PRETRAIN, ["--config.data.batch_size=8", "--config.model.head.kind=difusion"],
     "unknown action head kind 'difusion'"),
    ("finetune.py", FINETUNE, ["--config.pretrained_path=/nowhere"], "config.dataset needs a name"),
]  # fmt: skip
# the drill's typos (tests/command_lines.py), and a top-level typo under an explicit config
TYPOD = [
    *TYPOS.values(),
    ("train.py", PRETRAIN, "--config.batch_sise=8", "--config.data.batch_size"),
]


@pytest.mark.parametrize(("script", "config", "valid", "stops_at"), HEALTHY,
                         ids=[e[0] for e in HEALTHY])  # fmt: skip
def test_sound_overrides_get_past_the_command_line(tmp_path, script, config, valid, stops_at):
    """What the typos below are refused against: the same command with sound keys reaches
    main, which stops at a bad value in one line too."""
    healthy = run_entry(script, *config, "--workdir", str(tmp_path / "run"), *valid)
    assert "Traceback" not in healthy.stderr, healthy.stderr  # main's ConfigError: one line too
    assert healthy.returncode == 2 and stops_at in healthy.stderr, healthy.stderr
    assert "unknown config key" not in healthy.stderr


@pytest.mark.parametrize(("script", "config", "typo", "suggestion"), TYPOD,
                         ids=[*TYPOS, "train-top-level-typo"])  # fmt: skip
def test_a_typod_config_key_is_one_line_naming_the_closest_key(
    tmp_path, script, config, typo, suggestion
):
    """No 55-line traceback: one line naming the closest key, before any work. Without
    --config, train.py's default config takes the overrides as its flag is defined, before the
    command line is parsed: the typo is named there too."""
    workdir = tmp_path / "run"
    typod = run_entry(script, *config, "--workdir", str(workdir), typo)
    assert typod.returncode == 2 and "Traceback" not in typod.stderr, typod.stderr
    assert nonblank_lines(typod.stderr) == [typo_refusal(script, typo, suggestion)]
    assert not workdir.exists()


SERVE = "scripts/serve_policy.py"


def test_serve_policy_checks_its_flags_and_port_before_reading_the_checkpoint(tmp_path):
    """With a checkpoint that does not exist, what is reported tells how far the script got:
    sound flags and a free port reach the checkpoint; a bad flag or a port in use never do."""
    missing = str(tmp_path / "no_checkpoint")
    healthy = run_entry(SERVE, "--checkpoint", missing, "--port", "0", "--max_batch", "4")
    assert healthy.returncode != 0 and "no complete checkpoint under" in healthy.stderr

    bad = run_entry(SERVE, "--checkpoint", missing, "--max_batch", "0", "--exec_horizon", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert nonblank_lines(bad.stderr)[-1] == (
        "serve_policy.py: error: --exec_horizon must be >= 1, got 0; "
        "--max_batch must be an int >= 1, got 0"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_entry(SERVE, "--checkpoint", missing, "--port", str(port))
    assert busy.returncode == 1 and "checkpoint" not in busy.stderr, busy.stderr
    (line,) = nonblank_lines(busy.stderr)
    assert line.startswith(f"serve_policy.py: port {port} on 127.0.0.1 is already in use")


def test_a_workdir_in_use_is_one_line_not_a_traceback(tmp_path):
    """Issue 69 item 4: `WorkdirInUseError` printed 27 lines. The healthy command reaches main
    (`test_sound_overrides_get_past_the_command_line`); with the workdir held by another run
    (this process holds its lock, as a running train.py does) it stops there, in one line and
    exit status 1."""
    import fcntl
    import json

    from octo_like.training.checkpoints.workdir_lock import LOCK_FILE

    workdir = tmp_path / "run"
    workdir.mkdir()
    with open(workdir / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": 4242, "host": "elsewhere", "started": "then"}))
        held.flush()
        refused = run_entry(
            "train.py", *PRETRAIN, "--workdir", str(workdir), "--config.data.batch_size=8"
        )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    (line,) = [x for x in nonblank_lines(refused.stderr) if x.startswith("train.py: ")]
    assert line.startswith(f"train.py: WorkdirInUseError: workdir {workdir} is in use")
    assert "pid 4242 on elsewhere" in line
