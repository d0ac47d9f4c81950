"""The test environment itself: CPU only with 8 fake devices (set in conftest before jax)."""

import pathlib
import subprocess
import sys

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_eight_fake_cpu_devices():
    devices = jax.devices()
    assert len(devices) == 8
    assert {d.platform for d in devices} == {"cpu"}


def test_a_host_without_accelerators_starts_jax_on_the_cpu(tmp_path):
    """With libtpu installed (compile checks), train.py must not probe a TPU runtime on a
    laptop; an explicit JAX_PLATFORMS or an accelerator device file leaves JAX to decide."""
    from octo_like.host import prefer_cpu_without_accelerators

    none = [str(tmp_path / "accel*")]
    environ: dict[str, str] = {}
    assert prefer_cpu_without_accelerators(environ, none) and environ == {"JAX_PLATFORMS": "cpu"}
    chosen = {"JAX_PLATFORMS": "tpu"}
    assert not prefer_cpu_without_accelerators(chosen, none) and chosen["JAX_PLATFORMS"] == "tpu"
    (tmp_path / "accel0").touch()
    environ = {}
    assert not prefer_cpu_without_accelerators(environ, none) and environ == {}


def test_the_input_pipelines_tensorflow_runs_without_onednn_rewrites_unless_asked():
    """`lean_tensorflow` (train.py, finetune.py, these tests) turns oneDNN off in the TensorFlow
    it starts; a user's own setting wins."""
    import os
    import subprocess

    from octo_like.host import lean_tensorflow

    probe = "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"

    def onednn(environ):
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"} | environ
        run = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        return run.stdout.split()[-1]

    if onednn({"TF_ENABLE_ONEDNN_OPTS": "1"}) != "True":  # the probe sees it on where built
        pytest.skip("this TensorFlow is built without oneDNN")
    environ: dict[str, str] = {}
    lean_tensorflow(environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
    assert onednn(environ) == "False"
    chosen = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "0"}
    lean_tensorflow(chosen)
    assert chosen == {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "0"}


def test_an_error_in_a_single_process_run_is_raised_as_usual():
    """`exit_at_once_when_distributed` ends only a multi-process run at once (the dress
    rehearsal checks that: the peer of a SIGKILLed process exits 1 within seconds)."""
    from octo_like.host import exit_at_once_when_distributed

    with pytest.raises(ValueError, match="bad batch"), exit_at_once_when_distributed():
        raise ValueError("bad batch")
    with pytest.raises(SystemExit) as exited, exit_at_once_when_distributed():
        sys.exit(2)  # a bad config value's one-line exit
    assert exited.value.code == 2


def test_a_settled_collector_skips_the_imports_and_still_collects_new_cycles():
    """`settle_garbage_collector` (train.py, finetune.py and this worker, after their imports):
    the libraries' objects are frozen out of the collector's reach, and a reference cycle made
    afterwards is still freed by an automatic collection (no `gc.collect` call)."""
    import gc
    import weakref

    from octo_like.host import GC_THRESHOLDS

    assert gc.isenabled() and gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 100_000  # jax, TensorFlow, flax: frozen, not walked again

    class Node:
        pass

    node = Node()
    node.itself = node  # a cycle: only the collector frees it
    alive = weakref.ref(node)
    del node
    young = []  # allocations trigger the automatic collections, the middle generation's too
    for _ in range((GC_THRESHOLDS[1] + 2) * GC_THRESHOLDS[0]):
        young.append([])
    assert alive() is None


ENTRY_WITH_A_BUSY_THREAD = """
import sys, threading, time
from octo_like.config.command_line import run_command_line
from octo_like.config.typed import ConfigError
from octo_like.host import exit_at_once_when_distributed, exit_past_running_threads

def trace_forever():  # what PipelineThread does: Python and TensorFlow's C++ in turns
    import tensorflow as tf
    while True:
        tf.data.Dataset.range(1000).map(lambda x: x * 2).batch(4)

def main(flags):
    threading.Thread(target=trace_forever, daemon=True).start()
    time.sleep(1.0)
    if sys.argv[1:] == ["refuse"]:
        raise ConfigError("the data has 7-dim actions but model.action_dim is 14")
    raise RuntimeError("a bug")

with exit_at_once_when_distributed(), exit_past_running_threads():
    run_command_line(lambda flags, sys_argv=None: None, main, [sys.argv[0]])
"""


@pytest.mark.parametrize("how, status, said", [("refuse", 2, "ConfigError"), ("crash", 1, "a bug")])
def test_an_entry_point_exits_cleanly_while_a_thread_is_inside_tensorflow(
    tmp_path, how, status, said
):
    """Issue 69 item 2: finetune.py's ConfigError while the pipeline thread traced tf.data
    aborted the interpreter's shutdown (exit 134, "terminate called after throwing an instance
    of ''"); this script reproduced it in 2 of 4 runs before `exit_past_running_threads`."""
    script = tmp_path / "entry.py"
    script.write_text(ENTRY_WITH_A_BUSY_THREAD)
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, str(script), how], capture_output=True, text=True, timeout=300,
            cwd=REPO,
        )  # fmt: skip
        assert result.returncode == status, result.stderr[-2000:]
        assert said in result.stderr and "terminate called" not in result.stderr
