"""Test setup: CPU only, 8 fake devices compiled fast (tests/xla_flags.py), quiet TensorFlow,
libtpu shareable (compile-only TPU devices). Runs before jax is imported."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
from tests.xla_flags import xla_flags  # noqa: E402  (plain Python: imports no jax)

os.environ["XLA_FLAGS"] = xla_flags(devices=8, inherited=os.environ.get("XLA_FLAGS", ""))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# TPU compile checks load libtpu (compile-only devices) in several test processes at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_BRIDGE = REPO.parent / "shared" / "data" / "bridge_dataset" / "1.0.0"


def pytest_configure(config):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from octo_like.training.profiling import enable_compilation_cache
    from tests import xla_cache

    tf.config.set_visible_devices([], "GPU")
    tfds.disable_progress_bar()
    directory, config._octo_like_created_xla_cache = xla_cache.create()
    enable_compilation_cache(directory)


def pytest_collection_modifyitems(config, items):
    """Slow tests first (a stable sort): with `make test`'s workers (pytest-xdist, one test file
    per worker at a time) the longest files start at once instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_unconfigure(config):
    from tests import xla_cache

    if getattr(config, "_octo_like_created_xla_cache", False):
        xla_cache.remove()


@pytest.fixture(scope="session")
def bridge_dir() -> str:
    """The real 25-episode Bridge shard shipped beside the repository (read-only)."""
    if not SHARED_BRIDGE.exists():
        pytest.fail(f"missing {SHARED_BRIDGE}: CI must run with ../shared beside the repo")
    return str(SHARED_BRIDGE)
