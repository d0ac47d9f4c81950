"""The real command lines of train.py, finetune.py and serve_policy.py refuse a bad command in
one line, before any work: a typo'd config key names the closest key (no 55-line traceback),
and the server's flags and port are checked before its checkpoint is read."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PRETRAIN = ["--config", "configs/pretrain.py:debug"]
FINETUNE = ["--config", "configs/finetune.py:lora,language"]


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# (script, its config, a valid override that gets past the command line, the value it then
# stops at inside main, typo'd overrides and the key each should suggest)
ENTRIES = [
    ("train.py", PRETRAIN, ["--config.data.batch_size=8", "--config.model.head.kind=difusion"],
     "unknown action head kind 'difusion'",
     [("--config.data.batch_sise=8", "--config.data.batch_size"),
      ("--config.batch_sise=8", "--config.data.batch_size")]),
    ("finetune.py", FINETUNE, ["--config.pretrained_path=/nowhere"], "config.dataset needs a name",
     [("--config.pretrained_pth=/nowhere", "--config.pretrained_path")]),
]  # fmt: skip


@pytest.mark.parametrize(("script", "config", "valid", "stops_at", "typos"), ENTRIES,
                         ids=[e[0] for e in ENTRIES])  # fmt: skip
def test_a_typod_config_key_is_one_line_naming_the_closest_key(
    tmp_path, script, config, valid, stops_at, typos
):
    workdir = tmp_path / "run"
    healthy = _run(script, *config, "--workdir", str(workdir), *valid)
    assert "Traceback" not in healthy.stderr, healthy.stderr  # main's ConfigError: one line too
    assert healthy.returncode == 2 and stops_at in healthy.stderr, healthy.stderr
    assert "unknown config key" not in healthy.stderr

    for typo, suggestion in typos:
        typod = _run(script, *config, "--workdir", str(workdir), typo)
        assert typod.returncode == 2 and "Traceback" not in typod.stderr, typod.stderr
        (line,) = _lines(typod.stderr)
        assert line == (
            f"{script}: ConfigError: unknown config key {typo.split('=')[0].rsplit('.')[-1]!r} "
            f"in {typo}; did you mean {suggestion}?"
        )
    assert not workdir.exists()


def test_train_py_s_default_config_applies_overrides_while_defining_flags(tmp_path):
    """Without --config, train.py's default config takes the overrides as its flag is defined,
    before the command line is parsed: the typo is named there too."""
    typod = _run("train.py", "--workdir", str(tmp_path / "run"), "--config.data.batch_sise=8")
    assert typod.returncode == 2 and "Traceback" not in typod.stderr, typod.stderr
    assert _lines(typod.stderr)[-1].endswith("did you mean --config.data.batch_size?")


SERVE = "scripts/serve_policy.py"


def test_serve_policy_checks_its_flags_and_port_before_reading_the_checkpoint(tmp_path):
    """With a checkpoint that does not exist, what is reported tells how far the script got:
    sound flags and a free port reach the checkpoint; a bad flag or a port in use never do."""
    missing = str(tmp_path / "no_checkpoint")
    healthy = _run(SERVE, "--checkpoint", missing, "--port", "0", "--max_batch", "4")
    assert healthy.returncode != 0 and "no complete checkpoint under" in healthy.stderr

    bad = _run(SERVE, "--checkpoint", missing, "--max_batch", "0", "--exec_horizon", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert _lines(bad.stderr)[-1] == (
        "serve_policy.py: error: --exec_horizon must be >= 1, got 0; "
        "--max_batch must be an int >= 1, got 0"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _run(SERVE, "--checkpoint", missing, "--port", str(port))
    assert busy.returncode == 1 and "checkpoint" not in busy.stderr, busy.stderr
    (line,) = _lines(busy.stderr)
    assert line.startswith(f"serve_policy.py: port {port} on 127.0.0.1 is already in use")
