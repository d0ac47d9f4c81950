"""One launch: cheap refusals first (a workdir the hosts cannot share, a slice whose hosts do
not add up), then the compile check for a TPU slice (`gate.py`), then the command is printed
(`dry_run`) or its file written and the command run. `slurm` has no compile check: the pinned
CUDA plugin refuses compile-only GPU topologies on a machine without one (docs/pods.md)."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from typing import Any

from octo_like.launch import gate, gke, recipes, slices


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a launch runs (and the file it writes first), and the slice its step must fit."""

    command: list[str]
    path: str | None = None
    content: str | None = None
    slice_name: str = ""  # the TPU slice it starts on, as the user named it ("" for slurm)


def plan(args: Any, train_args: list[str]) -> Plan:
    """The plan of `scripts/launch.py`'s parsed flags (`args.engine` and its sub-command's)."""
    if args.engine in ("tpu-vm", "tpu-vm-status", "tpu-vm-stop"):
        vm = recipes.TpuVm(args.tpu, args.zone, args.project, args.repo_dir)
        if args.engine == "tpu-vm-status":
            return Plan(recipes.status_command(vm, args.workdir, args.lines))
        if args.engine == "tpu-vm-stop":
            return Plan(recipes.stop_command(vm, args.kill_after))
        accelerator = args.accelerator_type
        name = f"{accelerator} {args.tpu}" if accelerator else args.tpu
        return Plan(recipes.start_command(vm, train_args), slice_name=name)
    if args.engine == "slurm":
        job = recipes.SlurmJob(
            args.nodes,
            args.gpus_per_node,
            args.cpus_per_task,
            args.signal_seconds,
            args.partition,
            args.time,
            args.repo_dir,
        )
        return Plan(["sbatch", args.out], args.out, recipes.sbatch_script(job, train_args))
    target = gke.GkeSlice(
        args.name,
        args.image,
        args.tpu_accelerator,
        args.tpu_topology,
        args.workers,
        args.max_restarts,
    )
    return Plan(
        ["kubectl", "apply", "-f", args.out],
        args.out,
        gke.manifest(target, train_args),
        slice_name=f"{target.accelerator} {target.topology}",
    )


def slice_topology(args: Any) -> str | None:
    """libtpu's name of the slice a `tpu-vm` or `gke` launch starts on (None: not given)."""
    if args.engine == "gke":
        return slices.gke_topology(args.tpu_accelerator, args.tpu_topology)
    return slices.tpu_vm_topology(args.accelerator_type) if args.accelerator_type else None


def launch(args: Any, train_args: list[str], *, check_command: list[str]) -> dict:
    """Plans, checks (unless `args.skip_compile_check`), then prints or runs the launch.
    `check_command` runs the compile check script (``[python, scripts/compile_check.py]``)."""
    if train_args:
        recipes.require_shared_workdir(train_args)
    launching = plan(args, train_args)
    report = None
    if args.engine in ("tpu-vm", "gke"):
        if args.skip_compile_check:
            gate.skipped(launching.slice_name)
        else:
            topology = slice_topology(args)
            if topology is None:
                raise SystemExit(
                    "give --accelerator_type (the slice's, as gcloud names it: v4-128, "
                    "v5litepod-16, ...) so the train step is compiled for it before the "
                    f"launch, or {gate.SKIP_FLAG}"
                )
            report = gate.check_step_fits(
                check_command, topology, train_args, slice_name=launching.slice_name
            )
    command, path, content = launching.command, launching.path, launching.content
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
    return {"command": command, "path": path, "content": content, "compile_check": report}
