"""A JobSet manifest (built as data, written with PyYAML) for `kubectl apply`: one pod per TPU VM
host of the slice (the hosts follow from accelerator and topology; `workers` only checks them,
or picks two 4-chip hosts for an 8-chip v5e/v6e slice), with the node selectors and
`google.com/tpu` resources a GKE TPU node pool needs; the image comes from the repository's
Dockerfile."""

from __future__ import annotations

import dataclasses

from octo_like.launch.recipes import RUN_ID_ENV, train_command

# Chips per TPU VM host by GKE accelerator: v4/v5p hosts hold 4 chips, as do v5e/v6e pod
# slices of more than 8 chips (smaller v5e/v6e slices are one host holding them all).
GKE_ACCELERATORS = {
    "tpu-v4-podslice": 4,
    "tpu-v5p-slice": 4,
    "tpu-v5-lite-podslice": 4,
    "tpu-v6e-slice": 4,
}
# Accelerators whose slices of up to 8 chips are one VM holding them all.
SINGLE_HOST_UP_TO_8 = ("tpu-v5-lite-podslice", "tpu-v6e-slice")


def gke_hosts(accelerator: str, topology: str, workers: int | None) -> tuple[int, int]:
    """(hosts, chips per host) of a GKE TPU slice; `workers`, when given, must agree.

    v4/v5p hosts hold 4 chips. A v5e/v6e slice of 8 chips or fewer is one host holding all of
    them, except that 8 chips (2x4) may also be a node pool of two 4-chip hosts: `workers=2`
    picks that one."""
    try:
        sides = [int(n) for n in topology.lower().split("x")]
    except ValueError:
        sides = []
    if not sides or min(sides) < 1:
        raise SystemExit(f"--tpu_topology {topology!r} is not like 16x16 or 4x4x4")
    chips = 1
    for side in sides:
        chips *= side
    per_host = GKE_ACCELERATORS[accelerator]
    choices = [chips // per_host] if chips % per_host == 0 else []
    if accelerator in SINGLE_HOST_UP_TO_8 and chips <= 8:
        choices = [1] + [2] * (chips == 8)  # a single-host slice holds all of them
    if not choices:
        raise SystemExit(f"{chips} chips of {topology} do not split into hosts of {per_host}")
    hosts = choices[0] if workers is None else workers
    if hosts not in choices:
        raise SystemExit(
            f"--workers {workers} disagrees with {accelerator} {topology}: {chips} chips make "
            + " or ".join(f"{n} host(s) of {chips // n}" for n in choices)
        )
    return hosts, chips // hosts


@dataclasses.dataclass(frozen=True)
class GkeSlice:
    """A JobSet's name and image, and the TPU node pool's accelerator and topology."""

    name: str
    image: str
    accelerator: str = "tpu-v5-lite-podslice"
    topology: str = "16x16"
    workers: int | None = None
    max_restarts: int = 3


def jobset(target: GkeSlice, train_args: list[str]) -> dict:
    """The JobSet as data: one pod per host, each on a node of the TPU slice."""
    hosts, per_host = gke_hosts(target.accelerator, target.topology, target.workers)
    container = {
        "name": "octo-like",
        "image": target.image,
        "workingDir": "/app",
        "command": train_command(train_args, "tpu"),
        "env": [{"name": RUN_ID_ENV, "value": f"gke-jobset/{target.name}"}],  # kept by restarts
        "ports": [{"containerPort": 8471}, {"containerPort": 8080}],  # TPU runtime, JAX
        "securityContext": {"privileged": True},
        "resources": {
            "requests": {"google.com/tpu": per_host},
            "limits": {"google.com/tpu": per_host},
        },
    }
    pod = {
        "nodeSelector": {
            "cloud.google.com/gke-tpu-accelerator": target.accelerator,
            "cloud.google.com/gke-tpu-topology": target.topology,
        },
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 300,  # SIGTERM: every process saves, then exits
        "containers": [container],
    }
    job = {
        "parallelism": hosts,
        "completions": hosts,
        "completionMode": "Indexed",
        "backoffLimit": 0,
        "template": {"spec": pod},
    }
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {
            "name": target.name,
            "annotations": {
                "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"
            },
        },
        "spec": {
            # A restarted job resumes from the workdir's newest trusted checkpoint.
            "failurePolicy": {"maxRestarts": target.max_restarts},
            "network": {"enableDNSHostnames": True},
            "replicatedJobs": [{"name": "workers", "replicas": 1, "template": {"spec": job}}],
        },
    }


def manifest(target: GkeSlice, train_args: list[str]) -> str:
    """The JobSet as the YAML text `kubectl apply -f` reads."""
    import yaml

    return yaml.safe_dump(jobset(target, train_args), sort_keys=False)
