"""The entry scripts run as a user types them, and the config-key typos each must refuse in one
line: shared by tests/test_entry_command_lines.py (which asserts the exact line) and the failure
drill's entry cases (tests/drill/entries.py, which classify it), so both try the same typos."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PRETRAIN = ["--config", "configs/pretrain.py:debug"]
FINETUNE = ["--config", "configs/finetune.py:lora,language"]

# drill case id -> (script, its config flags, a typo'd override, the key it should suggest)
TYPOS = {
    "train-cli-typo-key": ("train.py", PRETRAIN, "--config.data.batch_sise=8",
                           "--config.data.batch_size"),
    "train-cli-typo-default-config": ("train.py", [], "--config.batch_sise=8",
                                      "--config.data.batch_size"),
    "finetune-cli-typo-key": ("finetune.py", FINETUNE, "--config.pretrained_pth=/nowhere",
                              "--config.pretrained_path"),
}  # fmt: skip


def run_entry(*argv: str, timeout: float = 200) -> subprocess.CompletedProcess:
    """`python *argv` from the repository root, on the CPU, TensorFlow's C++ logging quiet."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def typo_refusal(script: str, typo: str, suggestion: str) -> str:
    """The one line `script` must print for `typo` (its main's ConfigError, no traceback)."""
    key = typo.split("=")[0].rsplit(".")[-1]
    return (
        f"{script}: ConfigError: unknown config key {key!r} in {typo}; did you mean {suggestion}?"
    )
