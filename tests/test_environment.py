"""The test environment itself: CPU only with 8 fake devices (set in conftest before jax)."""

import sys

import jax
import pytest


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


def test_an_error_in_a_single_process_run_is_raised_as_usual():
    """`exit_at_once_when_distributed` ends only a multi-process run at once (the dress
    rehearsal checks that: the peer of a SIGKILLed process exits 1 within seconds)."""
    from octo_like.host import exit_at_once_when_distributed

    with pytest.raises(ValueError, match="bad batch"), exit_at_once_when_distributed():
        raise ValueError("bad batch")
    with pytest.raises(SystemExit) as exited, exit_at_once_when_distributed():
        sys.exit(2)  # a bad config value's one-line exit
    assert exited.value.code == 2
