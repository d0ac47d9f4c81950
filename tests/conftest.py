"""Test setup: CPU only, 8 fake devices compiled fast (tests/xla_flags.py), quiet TensorFlow,
libtpu shareable (compile-only TPU devices). Runs before jax is imported."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
from tests.xla_flags import xla_flags  # noqa: E402  (plain Python: imports no jax)

os.environ["XLA_FLAGS"] = xla_flags(devices=8, inherited=os.environ.get("XLA_FLAGS", ""))
from octo_like.host import lean_tensorflow  # noqa: E402  (imports nothing)

lean_tensorflow()  # as train.py: quiet, no oneDNN rewrites
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# TPU compile checks load libtpu (compile-only devices) in several test processes at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402

pytest_plugins = ["tests.cpu_report"]  # the heaviest tests by CPU time, after --durations

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_BRIDGE = REPO.parent / "shared" / "data" / "bridge_dataset" / "1.0.0"


def pytest_configure(config):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from octo_like.training.run.profiling import enable_compilation_cache
    from tests import xla_cache

    tf.config.set_visible_devices([], "GPU")
    tfds.disable_progress_bar()
    directory, config._octo_like_created_xla_cache = xla_cache.create()
    enable_compilation_cache(directory)
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # pytest-xdist's controller runs no test
    import flax.nnx  # noqa: F401  (with jax, optax and orbax: settled with TensorFlow)
    import optax  # noqa: F401
    import orbax.checkpoint  # noqa: F401

    from octo_like.host import settle_garbage_collector

    settle_garbage_collector()  # as train.py: a test worker traces models by the hundred


def pytest_collection_modifyitems(config, items):
    """Slow tests first (a stable sort): with `make test`'s workers (pytest-xdist, one test file
    per worker at a time) the longest files start at once instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_unconfigure(config):
    from tests import xla_cache

    if getattr(config, "_octo_like_created_xla_cache", False):
        xla_cache.remove()


@pytest.fixture(autouse=True)
def _session_compilation_cache(monkeypatch):
    """In-process training runs compile into the session's cache (tests/xla_cache.py).

    A run's default cache (``compilation_cache="workdir"``) is a new directory per workdir, so
    every test's run compiled its programs again, and pointed the worker's later compiles at
    that test's directory. Runs that name a directory (or "" for none) keep their setting;
    after each test the worker's cache is the session's again.
    """
    from octo_like.training.run import loop, profiling
    from tests import xla_cache

    session = xla_cache.directory()
    named = profiling.cache_directory
    monkeypatch.setattr(
        loop,
        "cache_directory",
        lambda setting, workdir: (
            session if setting == profiling.WORKDIR_CACHE else named(setting, workdir)
        ),
    )
    yield
    profiling.enable_compilation_cache(session)


@pytest.fixture(scope="session")
def bridge_dir() -> str:
    """The real 25-episode Bridge shard shipped beside the repository (read-only)."""
    if not SHARED_BRIDGE.exists():
        pytest.fail(f"missing {SHARED_BRIDGE}: CI must run with ../shared beside the repo")
    return str(SHARED_BRIDGE)
