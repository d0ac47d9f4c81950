"""Launch recipes for pretraining on a cluster, through each platform's own engine.

    python scripts/launch.py tpu-vm --tpu my-v4-128 --zone us-central2-b [--dry_run] -- \
        --config configs/pretrain.py:base,oxe_magic_soup --workdir gs://bucket/runs/octo_base \
        --config.data_dir=gs://bucket/oxe --config.model.language.checkpoint_dir=gs://bucket/t5
    python scripts/launch.py tpu-vm-status --tpu my-v4-128 --zone us-central2-b [--dry_run] \
        --workdir gs://bucket/runs/octo_base
    python scripts/launch.py tpu-vm-stop --tpu my-v4-128 --zone us-central2-b [--kill_after 120]
    python scripts/launch.py slurm --nodes 4 --gpus_per_node 8 [--cpus_per_task 32] \
        [--signal_seconds 300] [--partition gpu] [--dry_run] -- ...
    python scripts/launch.py gke --name octo-base --image IMAGE --tpu_accelerator \
        tpu-v5-lite-podslice --tpu_topology 16x16 [--workers 64] [--dry_run] -- ...

Nothing here schedules or supervises processes itself:
- `tpu-vm` starts train.py on every worker of a TPU VM slice through `gcloud compute tpus tpu-vm
  ssh --worker=all`, detached (`setsid nohup`), so it outlives the ssh session, each worker
  logging to ``<workdir>/logs/worker-<host>.log`` (for a gs:// workdir: on the worker's own
  disk, ``~/octo_like_logs/<run>/``); `tpu-vm-status` shows whether each worker's process runs
  and its log's last lines, `tpu-vm-stop` sends SIGTERM (every process saves the same step and
  exits) and, with --kill_after, SIGKILL to what is left.
- `slurm` writes an sbatch script: one task per node (`srun`, given `--cpus-per-task` again),
  SIGTERM `--signal_seconds` before the time limit so the run saves, `--requeue` so a preempted
  job comes back and resumes from its workdir.
- `gke` writes a JobSet manifest (built as data, written with PyYAML) for `kubectl apply`:
  one pod per TPU VM host of the slice (the hosts follow from accelerator and topology;
  `--workers` only checks them, or picks two 4-chip hosts for an 8-chip v5e/v6e slice), with
  the node selectors and `google.com/tpu` resources a GKE TPU node pool needs; the image comes
  from the repository's Dockerfile.
Each process runs `train.py` with the flags after ``--``, plus
``--config.distributed.enabled=True`` (JAX detects the TPU pod, SLURM or GKE cluster itself) and
``--config.platform=tpu|gpu`` (refuse to train on CPU by mistake), unless given; `tpu-vm` and
`gke` also set ``OCTO_RUN_ID`` (the TPU VM's / JobSet's name; SLURM's job id is read as it is),
so that a restart of the job after a preemption takes over its workdir's lease at once (see
octo_like/training/workdir_lock.py). A multi-host run needs a workdir every host sees: a gs://
URL, or a shared path declared with ``--config.distributed.shared_workdir=True`` (train.py
refuses anything else). `--dry_run` prints the command (and the file it would submit) without
running anything.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

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

# What every process runs, and what tpu-vm-status / tpu-vm-stop look for on the workers.
TRAIN_SCRIPT = "train.py"
LOG_ROOT = "~/octo_like_logs"
# The run identity a restarted job shares with its preempted self (workdir_lock.RUN_ID_ENV).
RUN_ID_ENV = "OCTO_RUN_ID"


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    engines = parser.add_subparsers(dest="engine", required=True)
    tpu = engines.add_parser("tpu-vm", help="train.py on every worker of a TPU VM slice")
    status = engines.add_parser("tpu-vm-status", help="is train.py running; its logs' tails")
    stop = engines.add_parser("tpu-vm-stop", help="SIGTERM (save and exit) on every worker")
    for sub in (tpu, status, stop):
        sub.add_argument("--tpu", required=True, help="TPU VM name")
        sub.add_argument("--zone", required=True)
        sub.add_argument("--project", default=None)
        sub.add_argument("--repo_dir", default="octo_like", help="checkout on the workers")
    status.add_argument("--workdir", required=True, help="the run's --workdir (finds the logs)")
    status.add_argument("--lines", type=int, default=5, help="log lines per worker")
    stop.add_argument("--kill_after", type=int, default=None, help="then SIGKILL after N s")
    slurm = engines.add_parser("slurm", help="an sbatch job, one process per node")
    slurm.add_argument("--nodes", type=int, required=True)
    slurm.add_argument("--gpus_per_node", type=int, default=8)
    slurm.add_argument("--cpus_per_task", type=int, default=32, help="CPUs for one node's task")
    slurm.add_argument(
        "--signal_seconds", type=int, default=300, help="SIGTERM this long before the time limit"
    )
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time", default="72:00:00")
    slurm.add_argument("--repo_dir", default=os.getcwd())
    slurm.add_argument("--out", default="runs/launch/octo_like.sbatch")
    gke = engines.add_parser("gke", help="a JobSet on a GKE TPU node pool")
    gke.add_argument("--name", required=True)
    gke.add_argument("--image", required=True, help="container image built from the Dockerfile")
    gke.add_argument("--tpu_accelerator", default="tpu-v5-lite-podslice",
                     choices=sorted(GKE_ACCELERATORS))  # fmt: skip
    gke.add_argument("--tpu_topology", default="16x16", help="chips per axis, e.g. 16x16, 4x4x4")
    gke.add_argument("--workers", type=int, default=None, help="hosts (default: from topology)")
    gke.add_argument("--max_restarts", type=int, default=3)
    gke.add_argument("--out", default="runs/launch/octo_like_jobset.yaml")
    for sub in (tpu, status, stop, slurm, gke):
        sub.add_argument("--dry_run", action="store_true", help="print, run nothing")
    args = parser.parse_args(argv)
    if args.engine in ("tpu-vm", "slurm", "gke") and not train_args:
        parser.error("give train.py's flags after '--' (at least --config and --workdir)")
    return args, train_args


def train_command(train_args: list[str], platform: str, python: str = "python") -> list[str]:
    """`train.py` with the cluster flags added (a flag already given is kept as given)."""
    extra = []
    given = " ".join(train_args)
    if "--config.distributed.enabled" not in given:
        extra.append("--config.distributed.enabled=True")
    if "--config.platform" not in given:
        extra.append(f"--config.platform={platform}")
    return [python, TRAIN_SCRIPT, *train_args, *extra]


def train_process_pattern() -> str:
    """The `pgrep -f` / `pkill -f` extended regex of a running train.py: the script of a python
    process. Anchored at the command line's start, so it does not match the ``bash -c '...'``
    that ssh runs the remote command in, whose text names the script too: a bare
    ``pkill -f train.py`` kills that shell, and ``pgrep -f train.py`` always finds it."""
    return rf"^[^ ]*python[^ ]* {re.escape(TRAIN_SCRIPT)}( |$)"


def workdir_of(train_args: list[str]) -> str:
    for i, arg in enumerate(train_args):
        if arg == "--workdir" and i + 1 < len(train_args):
            return train_args[i + 1]
        if arg.startswith("--workdir="):
            return arg.split("=", 1)[1]
    raise SystemExit("give train.py a --workdir (every host must see it: gs://... or shared)")


def require_shared_workdir(train_args: list[str]) -> None:
    """Refuses, before anything is launched, what train.py would refuse on every host."""
    workdir = workdir_of(train_args)
    declared = any(
        a.startswith("--config.distributed.shared_workdir=") and a.split("=", 1)[1] == "True"
        for a in train_args
    )
    if "://" not in workdir and not declared:
        raise SystemExit(
            f"--workdir {workdir} is a local path: the hosts of a cluster run cannot all see "
            "it. Use gs://BUCKET/runs/NAME, or add --config.distributed.shared_workdir=True "
            "if every host mounts this path (NFS, Filestore, Lustre)"
        )


def log_directory(workdir: str) -> str:
    """Where each worker logs: beside the run on a shared path, on its own disk for a URL."""
    if "://" in workdir:
        return f"{LOG_ROOT}/{workdir.rstrip('/').rsplit('/', 1)[-1]}"
    return f"{workdir.rstrip('/')}/logs"


def _quote_path(path: str) -> str:
    """A shell word for `path`, leaving a leading ``~/`` for the worker's shell to expand."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def _ssh(args, remote: str) -> list[str]:
    command = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}"]
    if args.project:
        command.append(f"--project={args.project}")
    return [*command, "--worker=all", f"--command={remote}"]


def tpu_vm(args, train_args):
    logs = _quote_path(log_directory(workdir_of(train_args)))
    log = f'{logs}/worker-"$(hostname)".log'
    train = shlex.join(train_command(train_args, "tpu", python=".venv/bin/python"))
    run_id = f"{RUN_ID_ENV}={shlex.quote(f'tpu-vm/{args.zone}/{args.tpu}')}"
    # Only the simple command goes to the background (the braces): a backgrounded `a && b && c`
    # would be a subshell that keeps ssh's stdout open until train.py ends, so `gcloud ... ssh`
    # would not return. setsid + nohup + the redirections detach train.py from the session.
    remote = (
        f"cd {shlex.quote(args.repo_dir)} && mkdir -p {logs} && "
        f"{{ {run_id} setsid nohup {train} >> {log} 2>&1 < /dev/null & }} && "
        f'echo "$(hostname): started pid $!, log "{log}'
    )
    return _ssh(args, remote), None, None


def tpu_vm_status(args, _):
    logs = _quote_path(log_directory(args.workdir))
    pattern = shlex.quote(train_process_pattern())
    remote = (
        f'echo "== $(hostname)"; pgrep -af {pattern} || echo "not running"; '
        f'tail -n {int(args.lines)} {logs}/worker-"$(hostname)".log 2>/dev/null || echo "no log"'
    )
    return _ssh(args, remote), None, None


def tpu_vm_stop(args, _):
    pattern = shlex.quote(train_process_pattern())
    remote = f'pkill -TERM -f {pattern} && echo "$(hostname): SIGTERM sent" || echo "not running"'
    if args.kill_after is not None:
        remote += f"; sleep {int(args.kill_after)}; pkill -KILL -f {pattern} || true"
    return _ssh(args, remote), None, None


def slurm(args, train_args):
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=octo_like",
        f"#SBATCH --nodes={args.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={args.cpus_per_task}",
        f"#SBATCH --gpus-per-node={args.gpus_per_node}",
        f"#SBATCH --time={args.time}",
        # SIGTERM to the job steps (srun's tasks: every train.py) this long before the limit:
        # each saves the same step and exits 0; --requeue brings a preempted job back, and the
        # rerun resumes from the workdir (output appended to the same file).
        f"#SBATCH --signal=TERM@{args.signal_seconds}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=%x-%j.out",
    ]
    if args.partition:
        lines.append(f"#SBATCH --partition={args.partition}")
    command = train_command(train_args, "gpu", python=".venv/bin/python")
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(args.repo_dir)}",
        "# One process per node sees all its GPUs; JAX reads the SLURM_* variables to join.",
        "# srun repeats --cpus-per-task: since Slurm 22.05 a step does not inherit it from",
        "# sbatch, and its task would be pinned to one CPU (one input thread per stage).",
        f"srun --kill-on-bad-exit=1 --cpus-per-task={args.cpus_per_task} " + shlex.join(command),
    ]
    return ["sbatch", args.out], args.out, "\n".join(lines) + "\n"


def gke_hosts(accelerator: str, topology: str, workers: int | None) -> tuple[int, int]:
    """(hosts, chips per host) of a GKE TPU slice; `workers`, when given, must agree.

    v4/v5p hosts hold 4 chips. A v5e/v6e slice of 8 chips or fewer is one host holding all of
    them, except that 8 chips (2x4) may also be a node pool of two 4-chip hosts: `--workers 2`
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


def jobset(args, train_args) -> dict:
    """The JobSet as data: one pod per host, each on a node of the TPU slice."""
    hosts, per_host = gke_hosts(args.tpu_accelerator, args.tpu_topology, args.workers)
    container = {
        "name": "octo-like",
        "image": args.image,
        "workingDir": "/app",
        "command": train_command(train_args, "tpu"),
        "env": [{"name": RUN_ID_ENV, "value": f"gke-jobset/{args.name}"}],  # kept by restarts
        "ports": [{"containerPort": 8471}, {"containerPort": 8080}],  # TPU runtime, JAX
        "securityContext": {"privileged": True},
        "resources": {
            "requests": {"google.com/tpu": per_host},
            "limits": {"google.com/tpu": per_host},
        },
    }
    pod = {
        "nodeSelector": {
            "cloud.google.com/gke-tpu-accelerator": args.tpu_accelerator,
            "cloud.google.com/gke-tpu-topology": args.tpu_topology,
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
            "name": args.name,
            "annotations": {
                "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"
            },
        },
        "spec": {
            # A restarted job resumes from the workdir's newest trusted checkpoint.
            "failurePolicy": {"maxRestarts": args.max_restarts},
            "network": {"enableDNSHostnames": True},
            "replicatedJobs": [{"name": "workers", "replicas": 1, "template": {"spec": job}}],
        },
    }


def gke(args, train_args):
    import yaml

    manifest = yaml.safe_dump(jobset(args, train_args), sort_keys=False)
    return ["kubectl", "apply", "-f", args.out], args.out, manifest


def main(argv=None) -> dict:
    args, train_args = parse_args(argv)
    build = {
        "tpu-vm": tpu_vm, "tpu-vm-status": tpu_vm_status, "tpu-vm-stop": tpu_vm_stop,
        "slurm": slurm, "gke": gke,
    }[args.engine]  # fmt: skip
    if train_args:
        require_shared_workdir(train_args)
    command, path, content = build(args, train_args)
    if args.dry_run:
        if path:
            print(f"# would write {path}:\n{content}")
        print("# would run:\n" + shlex.join(command))
    else:
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as file:
                file.write(content)
        subprocess.run(command, check=True)
    return {"command": command, "path": path, "content": content}


if __name__ == "__main__":
    main()
