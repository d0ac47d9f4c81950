"""The train.py command every process runs, the TPU VM ssh commands and the sbatch script.

- `tpu-vm` starts train.py on every worker of a TPU VM slice through `gcloud compute tpus
  tpu-vm ssh --worker=all`, detached (`setsid nohup`), so it outlives the ssh session, each
  worker logging to ``<workdir>/logs/worker-<host>.log`` (for a gs:// workdir: on the worker's
  own disk, ``~/octo_like_logs/<run>/``); `status_command` shows whether each worker's process
  runs and its log's last lines, `stop_command` sends SIGTERM (every process saves the same step
  and exits) and, with `kill_after`, SIGKILL to what is left.
- `slurm` is an sbatch script: one task per node (`srun`, given `--cpus-per-task` again),
  SIGTERM `signal_seconds` before the time limit so the run saves, `--requeue` so a preempted
  job comes back and resumes from its workdir.
"""

from __future__ import annotations

import dataclasses
import re
import shlex

# What every process runs, and what the status and stop commands look for on the workers.
TRAIN_SCRIPT = "train.py"
LOG_ROOT = "~/octo_like_logs"
# The run identity a restarted job shares with its preempted self (workdir_lock.RUN_ID_ENV).
RUN_ID_ENV = "OCTO_RUN_ID"


def train_command(train_args: list[str], platform: str, python: str = "python") -> list[str]:
    """`train.py` with the cluster flags added (a flag already given is kept as given):
    ``--config.distributed.enabled=True`` (JAX detects the TPU pod, SLURM or GKE cluster
    itself) and ``--config.platform=tpu|gpu`` (refuse to train on CPU by mistake)."""
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


@dataclasses.dataclass(frozen=True)
class TpuVm:
    """A TPU VM slice as gcloud names it, and where the repository is checked out on it."""

    name: str
    zone: str
    project: str | None = None
    repo_dir: str = "octo_like"

    def ssh(self, remote: str) -> list[str]:
        """`gcloud ... ssh` running `remote` (a bash command line) on every worker."""
        command = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.name, f"--zone={self.zone}"]
        if self.project:
            command.append(f"--project={self.project}")
        return [*command, "--worker=all", f"--command={remote}"]


def start_command(vm: TpuVm, train_args: list[str]) -> list[str]:
    logs = _quote_path(log_directory(workdir_of(train_args)))
    log = f'{logs}/worker-"$(hostname)".log'
    train = shlex.join(train_command(train_args, "tpu", python=".venv/bin/python"))
    run_id = f"{RUN_ID_ENV}={shlex.quote(f'tpu-vm/{vm.zone}/{vm.name}')}"
    # Only the simple command goes to the background (the braces): a backgrounded `a && b && c`
    # would be a subshell that keeps ssh's stdout open until train.py ends, so `gcloud ... ssh`
    # would not return. setsid + nohup + the redirections detach train.py from the session.
    remote = (
        f"cd {shlex.quote(vm.repo_dir)} && mkdir -p {logs} && "
        f"{{ {run_id} setsid nohup {train} >> {log} 2>&1 < /dev/null & }} && "
        f'echo "$(hostname): started pid $!, log "{log}'
    )
    return vm.ssh(remote)


def status_command(vm: TpuVm, workdir: str, lines: int) -> list[str]:
    logs = _quote_path(log_directory(workdir))
    pattern = shlex.quote(train_process_pattern())
    remote = (
        f'echo "== $(hostname)"; pgrep -af {pattern} || echo "not running"; '
        f'tail -n {int(lines)} {logs}/worker-"$(hostname)".log 2>/dev/null || echo "no log"'
    )
    return vm.ssh(remote)


def stop_command(vm: TpuVm, kill_after: int | None) -> list[str]:
    pattern = shlex.quote(train_process_pattern())
    remote = f'pkill -TERM -f {pattern} && echo "$(hostname): SIGTERM sent" || echo "not running"'
    if kill_after is not None:
        remote += f"; sleep {int(kill_after)}; pkill -KILL -f {pattern} || true"
    return vm.ssh(remote)


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    """What an sbatch job asks for: nodes, their GPUs and CPUs, and when SIGTERM comes."""

    nodes: int
    gpus_per_node: int = 8
    cpus_per_task: int = 32
    signal_seconds: int = 300
    partition: str | None = None
    time: str = "72:00:00"
    repo_dir: str = "."


def sbatch_script(job: SlurmJob, train_args: list[str]) -> str:
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=octo_like",
        f"#SBATCH --nodes={job.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={job.cpus_per_task}",
        f"#SBATCH --gpus-per-node={job.gpus_per_node}",
        f"#SBATCH --time={job.time}",
        # SIGTERM to the job steps (srun's tasks: every train.py) this long before the limit:
        # each saves the same step and exits 0; --requeue brings a preempted job back, and the
        # rerun resumes from the workdir (output appended to the same file).
        f"#SBATCH --signal=TERM@{job.signal_seconds}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=%x-%j.out",
    ]
    if job.partition:
        lines.append(f"#SBATCH --partition={job.partition}")
    command = train_command(train_args, "gpu", python=".venv/bin/python")
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(job.repo_dir)}",
        "# One process per node sees all its GPUs; JAX reads the SLURM_* variables to join.",
        "# srun repeats --cpus-per-task: since Slurm 22.05 a step does not inherit it from",
        "# sbatch, and its task would be pinned to one CPU (one input thread per stage).",
        f"srun --kill-on-bad-exit=1 --cpus-per-task={job.cpus_per_task} " + shlex.join(command),
    ]
    return "\n".join(lines) + "\n"
