"""What a run is running on: the start-up report and the accelerator check.

A pod launch that silently fell back to CPU (a missing `jax[tpu]` / `jax[cuda12]` install, a
driver mismatch) would train ~1000x slower without a word; `require_platform` stops it at once.
"""

from __future__ import annotations

import os

import jax

from octo_like.config.typed import ConfigError

PLATFORMS = ("", "cpu", "gpu", "tpu")
_INSTALL_HINT = {
    "tpu": 'pip install -e ".[tpu]" on every TPU VM worker',
    "gpu": 'pip install -e ".[cuda12]" (or ".[cuda13]") on a machine with NVIDIA drivers',
    "cpu": "unset the platform requirement",
}


def require_platform(platform: str, devices=None) -> None:
    """Raises ConfigError unless JAX's devices are on `platform` ('' accepts any)."""
    if platform not in PLATFORMS:
        raise ConfigError(f"platform must be one of {PLATFORMS[1:]} or '' (any), got {platform!r}")
    if not platform:
        return
    devices = jax.devices() if devices is None else devices
    found = sorted({d.platform for d in devices})
    if platform not in found:
        raise ConfigError(
            f"the config asks for platform {platform!r}, but JAX found only {found} devices "
            f"({len(devices)} of them; JAX backend {jax.default_backend()!r}). Install the "
            f"accelerator build: {_INSTALL_HINT[platform]}"
        )


def describe_runtime(mesh=None) -> str:
    """Backend, device kind and counts, processes and mesh, for the start-up log."""
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    text = (
        f"backend {jax.default_backend()} ({', '.join(kinds)}): {len(devices)} devices, "
        f"{jax.local_device_count()} local; process {jax.process_index()} of "
        f"{jax.process_count()}; jax {jax.__version__}; host {describe_host_cpus()}"
    )
    if mesh is not None:
        from octo_like.training.parallel.sharding import describe_mesh

        text += f"; {describe_mesh(mesh)}"
    return text


def describe_host_cpus() -> str:
    """``2 CPUs (Intel(R) Xeon(R) Processor)``: the cores this process may use and their model.
    A CPU step time depends on the machine as much as on the config (one commit trained
    `laptop_long` at 4.5 steps/s on one day's 2-core machine and 3.1 on another day's), so a
    run's log names them."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 0
    model = cpu_model()
    return f"{count} CPUs" + (f" ({model})" if model else "")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """``AMD EPYC, family 25 model 17``: the CPU's model name with its family and model numbers
    (where /proc/cpuinfo has them), since a name alone may not tell generations apart (a bare
    ``AMD EPYC`` under KVM); "" where /proc/cpuinfo cannot be read (not Linux)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block describes them all
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return ""
    model = fields.get("model name", "")
    family, number = fields.get("cpu family"), fields.get("model")
    if model and family and number:
        return f"{model}, family {family} model {number}"
    return model
