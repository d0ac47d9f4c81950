"""The test environment itself: CPU only with 8 fake devices (set in conftest before jax)."""

import jax


def test_eight_fake_cpu_devices():
    devices = jax.devices()
    assert len(devices) == 8
    assert {d.platform for d in devices} == {"cpu"}
