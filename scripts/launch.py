"""Launch recipes for pretraining on a cluster, through each platform's own engine.

    python scripts/launch.py tpu-vm --tpu my-v4-128 --accelerator_type v4-128 \
        --zone us-central2-b [--dry_run] [--skip_compile_check] -- \
        --config configs/pretrain.py:base,oxe_magic_soup --workdir gs://bucket/runs/octo_base \
        --config.data_dir=gs://bucket/oxe --config.model.language.checkpoint_dir=gs://bucket/t5
    python scripts/launch.py tpu-vm-status --tpu my-v4-128 --zone us-central2-b [--dry_run] \
        --workdir gs://bucket/runs/octo_base
    python scripts/launch.py tpu-vm-stop --tpu my-v4-128 --zone us-central2-b [--kill_after 120]
    python scripts/launch.py slurm --nodes 4 --gpus_per_node 8 [--cpus_per_task 32] \
        [--signal_seconds 300] [--partition gpu] [--dry_run] -- ...
    python scripts/launch.py gke --name octo-base --image IMAGE --tpu_accelerator \
        tpu-v5-lite-podslice --tpu_topology 16x16 [--workers 64] [--dry_run] -- ...

`tpu-vm` starts train.py detached on every worker of a TPU VM slice (`tpu-vm-status` and
`tpu-vm-stop` follow and stop it), `slurm` writes and submits an sbatch script, `gke` a JobSet
manifest. Before `tpu-vm` and `gke` start anything (a dry run included), the run's train step
is compiled for the slice's topology (from --accelerator_type, or GKE's accelerator and
topology) by scripts/compile_check.py, and a step that does not fit is refused with what would
make it fit; --skip_compile_check skips that, saying so. Each process runs train.py with the
flags after ``--`` plus ``--config.distributed.enabled=True`` and ``--config.platform=tpu|gpu``;
a local workdir the hosts cannot all see is refused. `--dry_run` prints the command (and the
file it would submit) without running anything. The recipes are octo_like/launch/.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from octo_like.launch.gke import GKE_ACCELERATORS
from octo_like.launch.launcher import launch

COMPILE_CHECK = pathlib.Path(__file__).resolve().parent / "compile_check.py"


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
    tpu.add_argument(
        "--accelerator_type", default=None, help="the slice's, as gcloud names it: v4-128, "
        "v5litepod-16, v5p-128, v6e-256 (the compile check's topology)"
    )  # fmt: skip
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
    for sub in (tpu, gke):
        sub.add_argument(
            "--skip_compile_check", action="store_true",
            help="launch without compiling the train step for the slice first",
        )  # fmt: skip
    for sub in (tpu, status, stop, slurm, gke):
        sub.add_argument("--dry_run", action="store_true", help="print, run nothing")
    args = parser.parse_args(argv)
    if args.engine in ("tpu-vm", "slurm", "gke") and not train_args:
        parser.error("give train.py's flags after '--' (at least --config and --workdir)")
    return args, train_args


def main(argv=None) -> dict:
    args, train_args = parse_args(argv)
    return launch(args, train_args, check_command=[sys.executable, str(COMPILE_CHECK)])


if __name__ == "__main__":
    main()
