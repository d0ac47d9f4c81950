"""libtpu's start-up settings on a host that is not a TPU VM (the compile check's machine).

When libtpu loads for compile-only devices (`jax.experimental.topologies`), it first describes
the TPU VM it believes it runs on. JAX tells it to skip the GCE metadata query on a host without
TPU chips (``TPU_SKIP_MDS_QUERY``), and libtpu then writes to the process's stderr, from C++,
that it found no host bounds, could not determine the TPU accelerator type, and (an E-level
``INVALID_ARGUMENT`` line) no valid worker hostname: noise before every compile check's report,
about a machine nobody asked about. Saying what this host is, one host (bounds 1,1,1) whose
only worker is itself, leaves libtpu nothing to warn about and does not change the compile:
the topology's chips, hosts and coordinates come from its name
(tests/training/test_compile_check.py). On a TPU VM the metadata server describes the host, so
nothing is set there; nor is a variable the user has set.
"""

from __future__ import annotations

from collections.abc import Mapping

CPU_HOST_SETTINGS = {"TPU_HOST_BOUNDS": "1,1,1", "TPU_WORKER_HOSTNAMES": "localhost"}


def cpu_host_environment(environ: Mapping[str, str], has_tpu_chips: bool) -> dict[str, str]:
    """The variables to add to `environ` before libtpu loads (none on a host with TPU chips)."""
    if has_tpu_chips:
        return {}
    return {key: value for key, value in CPU_HOST_SETTINGS.items() if key not in environ}


def host_has_tpu_chips() -> bool:
    """JAX's own test of a TPU VM (TPU chips on the PCI bus), the one that decides whether libtpu
    skips the metadata query; JAX offers it only under `jax._src`."""
    try:
        from jax._src import hardware_utils

        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except (ImportError, AttributeError):  # moved in another JAX: assume a TPU VM, set nothing
        return True
