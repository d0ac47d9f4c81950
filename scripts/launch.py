"""Launch recipes for pretraining on a cluster, through each platform's own engine.

    python scripts/launch.py tpu-vm --tpu my-v4-128 --zone us-central2-b [--dry_run] -- \
        --config configs/pretrain.py:base,oxe_magic_soup --workdir runs/octo_base \
        --config.data_dir=gs://bucket/oxe --config.model.language.checkpoint_dir=/models/t5-base
    python scripts/launch.py slurm --nodes 4 --gpus_per_node 8 [--partition gpu] [--dry_run] -- ...
    python scripts/launch.py gke --name octo-base --image IMAGE --tpu_accelerator \
        tpu-v5-lite-podslice --tpu_topology 16x16 --workers 64 [--dry_run] -- ...

Nothing here schedules or supervises processes: `tpu-vm` runs the same command on every worker
through `gcloud compute tpus tpu-vm ssh --worker=all`, `slurm` writes an sbatch script whose
`srun` starts one process per node, and `gke` writes a JobSet manifest for `kubectl apply`.
Each process runs `train.py` with the flags after ``--``, plus
``--config.distributed.enabled=True`` (JAX detects the TPU pod, SLURM or GKE cluster itself) and
``--config.platform=tpu|gpu`` (refuse to train on CPU by mistake), unless given. `--dry_run`
prints the command (and the file it would submit) without running anything.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

PLATFORM = {"tpu-vm": "tpu", "slurm": "gpu", "gke": "tpu"}


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    engines = parser.add_subparsers(dest="engine", required=True)
    tpu = engines.add_parser("tpu-vm", help="every worker of a Cloud TPU VM slice")
    tpu.add_argument("--tpu", required=True, help="TPU VM name")
    tpu.add_argument("--zone", required=True)
    tpu.add_argument("--project", default=None)
    tpu.add_argument("--repo_dir", default="octo_like", help="checkout on the workers")
    slurm = engines.add_parser("slurm", help="an sbatch job, one process per node")
    slurm.add_argument("--nodes", type=int, required=True)
    slurm.add_argument("--gpus_per_node", type=int, default=8)
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time", default="72:00:00")
    slurm.add_argument("--repo_dir", default=os.getcwd())
    slurm.add_argument("--out", default="runs/launch/octo_like.sbatch")
    gke = engines.add_parser("gke", help="a JobSet on a GKE TPU node pool")
    gke.add_argument("--name", required=True)
    gke.add_argument("--image", required=True, help="container image with octo_like installed")
    gke.add_argument("--tpu_accelerator", default="tpu-v5-lite-podslice")
    gke.add_argument("--tpu_topology", default="16x16")
    gke.add_argument("--workers", type=int, required=True, help="TPU VM hosts in the slice")
    gke.add_argument("--chips_per_worker", type=int, default=4)
    gke.add_argument("--out", default="runs/launch/octo_like_jobset.yaml")
    for sub in (tpu, slurm, gke):
        sub.add_argument("--dry_run", action="store_true", help="print, run nothing")
    args = parser.parse_args(argv)
    if not train_args:
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
    return [python, "train.py", *train_args, *extra]


def tpu_vm(args, train_args) -> tuple[list[str], str | None, str | None]:
    remote = f"cd {shlex.quote(args.repo_dir)} && " + shlex.join(
        train_command(train_args, "tpu", python=".venv/bin/python")
    )
    command = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}"]
    if args.project:
        command.append(f"--project={args.project}")
    return [*command, "--worker=all", f"--command={remote}"], None, None


def slurm(args, train_args) -> tuple[list[str], str, str]:
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=octo_like",
        f"#SBATCH --nodes={args.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={args.gpus_per_node}",
        f"#SBATCH --time={args.time}",
        "#SBATCH --output=%x-%j.out",
    ]
    if args.partition:
        lines.append(f"#SBATCH --partition={args.partition}")
    command = train_command(train_args, "gpu", python=".venv/bin/python")
    lines += [
        "set -euo pipefail",
        f"cd {shlex.quote(args.repo_dir)}",
        "# One process per node sees all its GPUs; JAX reads the SLURM_* variables to join.",
        "srun " + shlex.join(command),
    ]
    return ["sbatch", args.out], args.out, "\n".join(lines) + "\n"


def gke(args, train_args) -> tuple[list[str], str, str]:
    command = train_command(train_args, "tpu")
    args_yaml = "\n".join(f"            - {arg!r}" for arg in command)
    manifest = f"""apiVersion: jobset.x-k8s.io/v1alpha2
kind: JobSet
metadata:
  name: {args.name}
  annotations:
    alpha.jobset.sigs.k8s.io/exclusive-topology: cloud.google.com/gke-nodepool
spec:
  failurePolicy:
    maxRestarts: 3  # a restarted job resumes from the workdir's latest checkpoint
  replicatedJobs:
  - name: workers
    template:
      spec:
        parallelism: {args.workers}
        completions: {args.workers}
        backoffLimit: 0
        template:
          spec:
            nodeSelector:
              cloud.google.com/gke-tpu-accelerator: {args.tpu_accelerator}
              cloud.google.com/gke-tpu-topology: {args.tpu_topology}
            restartPolicy: Never
            containers:
            - name: octo-like
              image: {args.image}
              workingDir: /app
              command:
{args_yaml}
              resources:
                limits:
                  google.com/tpu: {args.chips_per_worker}
"""
    return ["kubectl", "apply", "-f", args.out], args.out, manifest


def main(argv=None) -> dict:
    args, train_args = parse_args(argv)
    build = {"tpu-vm": tpu_vm, "slurm": slurm, "gke": gke}[args.engine]
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
