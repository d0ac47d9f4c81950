"""Test setup: CPU only, 8 fake devices, quiet TensorFlow. Runs before jax is imported."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_BRIDGE = REPO.parent / "shared" / "data" / "bridge_dataset" / "1.0.0"


def pytest_configure(config):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    tfds.disable_progress_bar()


@pytest.fixture(scope="session")
def bridge_dir() -> str:
    """The real 25-episode Bridge shard shipped beside the repository (read-only)."""
    if not SHARED_BRIDGE.exists():
        pytest.fail(f"missing {SHARED_BRIDGE}: CI must run with ../shared beside the repo")
    return str(SHARED_BRIDGE)
