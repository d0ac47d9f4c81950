"""What the transfer benchmark's pretraining sees, before it runs: a dry run.

    python scripts/transfer_pretraining.py --workdir runs/transfer --pretrain_config laptop_broad \
        --held_out family:door,family:coffee,family:plate,family:window,family:faucet

Takes scripts/benchmark_transfer.py's flags and prints the train.py command it would run, the
tasks pretraining collects demonstrations of on which embodiments, what is held out, and (with
--target) whether each target would be refused for leaking into pretraining; with --pretrained,
the same for an existing checkpoint (read from the ``config.json`` its run holds). Nothing is
collected or trained. The logic is `octo_like.envs.transfer.transfer_scope.dry_run`, which the
benchmark (`octo_like.envs.transfer.transfer_benchmark`) checks its targets with too.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # train.py
    sys.path.insert(0, REPO)


def parse_args(argv=None) -> argparse.Namespace:
    """scripts/benchmark_transfer.py's command line (the same flags)."""
    from octo_like.envs.transfer.transfer_benchmark import parse_args as parse

    return parse(argv, description=__doc__.split("\n")[0])


def main(argv=None):
    """Prints what pretraining sees and which targets leak; returns the `PretrainingScope`."""
    import train
    from octo_like.envs.transfer.transfer_scope import EntryPoints, dry_run

    return dry_run(parse_args(argv), EntryPoints(os.path.join(REPO, "configs"), train))


if __name__ == "__main__":
    main()
