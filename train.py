"""Pretraining entry point (the training issue fills this in).

Until the model and training loop land, `python train.py` runs the input pipeline on the shared
Bridge shard for a short while and prints its throughput, so `make train` exercises the data path.
"""

from __future__ import annotations

import os
import sys

BRIDGE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "shared", "data", "bridge_dataset", "1.0.0"
)


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts"))
    import benchmark_data

    benchmark_data.main(
        ["--data_dir", BRIDGE, "--seconds", "20", "--resize", "256", "--augment"] + list(argv or [])
    )


if __name__ == "__main__":
    main(sys.argv[1:])
