"""Compile a config's exact train step for a TPU pod topology, on any machine, before booking it.

    python scripts/compile_check.py --topology v4:4x4x4 -- \
        --config configs/pretrain.py:base,oxe_magic_soup --config.mesh.fsdp=8
    python scripts/compile_check.py --topology v4:4x4x2 --num_slices 2 -- \
        --config configs/pretrain.py:small,oxe_magic_soup

The flags after ``--`` are train.py's (``--config`` with its overrides); no data is read and no
weight is materialized, so data_dir and the T5 directory may point anywhere (T5-base shapes are
used when the directory is not readable here). Topology names are libtpu's: ``v4:4x4x4`` is a
v4-128 (64 chips), ``v5e:16x16`` a v5e-256, ``v5p:4x4x4`` a v5p-128, ``v6e:16x16`` a v6e-256;
``--num_slices 2`` joins slices over DCN (set ``--config.mesh.dcn_*`` as for the run).
Prints per-chip memory against HBM, XLA vs analytic FLOPs, collectives, the ideal step time and
the compile time, what to change when it does not fit, then one JSON line. Exit status: 0 when
it fits, 3 when it does not, 2 for a bad config or topology. Needs libtpu
(``pip install -e ".[tpu]"``; `make test` installs it). `scripts/launch.py tpu-vm|gke` runs
it for the slice before launching. On a machine without TPU chips libtpu is told it runs on one
host of its own (octo_like/training/pods/libtpu_host.py), so it does not warn about the TPU VM it is
not; its errors are printed as before.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

# Compile-only devices need libtpu, not a TPU backend: keep JAX's own backend on the CPU, and
# let libtpu load beside another process (a training run on this TPU VM, parallel tests).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# Placeholders for what a compile never reads (set only when the command gives none).
UNREAD_DATA_DIR = "/compile-check-reads-no-data"
UNREAD_T5_DIR = "/compile-check-reads-no-t5"  # not readable: T5-base shapes


def parse_args(argv: list[str] | None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topology", required=True, help="libtpu name, e.g. v4:4x4x4")
    parser.add_argument("--num_slices", type=int, default=1)
    parser.add_argument(
        "--chip_config_name", default=None, help="default: megacore on v4/v5p, else default"
    )
    parser.add_argument(
        "--proprio_dim", type=int, default=None, help="padded proprio width (models reading it)"
    )
    args = parser.parse_args(own)
    if not train_args:
        parser.error("give train.py's flags after '--' (at least --config)")
    return args, train_args


def typed_config(train_args: list[str]):
    """train.py's config for these flags, with placeholders for paths a compile never reads."""
    import train
    from octo_like.training.config import parse_train_config

    argv = ["train.py", *train_args]
    if "--workdir" not in train_args:
        argv += ["--workdir", "runs/compile_check"]
    config, workdir, _, _ = train.parse_command_line(argv)
    if not config.data_dir and not config.mix.startswith(("metaworld", "synthetic")):
        config.data_dir = UNREAD_DATA_DIR
    language = config.model.language
    if language.encoder == "t5" and not language.checkpoint_dir:
        language.checkpoint_dir = UNREAD_T5_DIR
    return parse_train_config(config, workdir, generated=train.simulated_datasets)


def main(argv: list[str] | None = None) -> dict:
    args, train_args = parse_args(argv)
    from octo_like.config.typed import ConfigError
    from octo_like.training.pods.compile_check import compile_train_step, format_report

    try:
        config = typed_config(train_args)
        report = compile_train_step(
            config,
            args.topology,
            num_slices=args.num_slices,
            chip_config_name=args.chip_config_name,
            proprio_dim=args.proprio_dim,
        )
    except (ConfigError, ValueError) as error:
        print(f"compile check: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    print(format_report(report))
    result = report.as_json()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    # Process-wide, so here: what libtpu would otherwise warn it cannot find on a CPU host.
    from octo_like.training.pods.libtpu_host import cpu_host_environment, host_has_tpu_chips

    os.environ.update(cpu_host_environment(os.environ, host_has_tpu_chips()))
    outcome = main()
    sys.exit(3 if outcome["fits"] is False else 0)
