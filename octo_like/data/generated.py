"""Datasets a program writes on first use (simulator demonstrations), behind one small interface.

The training loop reads dataset locations only. A mix whose data is generated on first use (the
simulated MetaWorld mixes of `make train`) comes with a `GeneratedDatasets`, built by the entry
point from the layer that knows how to make the data (`octo_like.envs.simulated_data`):
`train.parse_train_config` asks it where the datasets and their tokenizer live, and the entry
point calls `ensure` once, on the main process, before the loop starts. The synthetic Bridge-like
set (`data/synthetic.py`) is the data layer's own and needs no provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from octo_like.data.config import DatasetSource


class GeneratedDatasets(Protocol):
    """Where generated datasets live, and how to write whatever is missing."""

    def sources(self) -> list[DatasetSource]:
        """Every dataset of the mix with its TFDS data root (written or not yet)."""
        ...

    def tokenizer_dir(self) -> str:
        """Where the embedded text encoder's tokenizer (trained on the data's instructions) is."""
        ...

    def ensure(self) -> None:
        """Writes the datasets and the tokenizer that are missing (idempotent)."""
        ...


# (mix name, the config's `simulation` section) -> the mix's generated datasets
GeneratedDatasetsFactory = Callable[[str, Any], GeneratedDatasets]
