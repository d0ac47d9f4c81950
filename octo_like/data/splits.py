"""Which episodes of a dataset a run reads: TFDS split expressions checked against the dataset,
and Octo's hold-out rule for a dataset without a ``val`` split.

A split is a TFDS split expression: a name (``train``), a slice (``train[:95%]``), a union
(``train+val``) or ``all`` (every split of the dataset, as Octo computes its statistics). TFDS
reads all of them (`builder.info.splits[split]`); `split_names` says which named splits one
covers, and refuses a name the dataset lacks with its available splits.

`holdout_splits` is Octo's rule (octo/data/dataset.py, ``make_dataset_from_rlds``): validate on
the dataset's ``val`` split; when it has none, train on the first 95% of the training split and
validate on the last 5%. TFDS rounds a percent boundary the same way wherever it appears, so the
two slices are disjoint and together the whole split.
"""

from __future__ import annotations

from typing import Any

ALL = "all"  # TFDS: every split of the dataset
VAL = "val"  # the conventional held-out split
AUTO = "auto"  # val_split: VAL if the dataset has it, else `HOLDOUT_PERCENT` of the training split
HOLDOUT_PERCENT = 5  # Octo's: train[:95%] / train[95%:]


def split_names(builder: Any, split: str) -> list[str]:
    """The named splits `split` reads from (``"train[:95%]"`` -> ``["train"]``, ``"all"`` ->
    every split), in order; a name the dataset lacks is a ValueError naming the dataset and its
    splits."""
    available = sorted(builder.info.splits)
    names: list[str] = []
    for part in str(split).split("+"):
        name = part.split("[")[0].strip()
        if name == ALL:
            names.extend(available)
        elif name in available:
            names.append(name)
        else:
            within = f" (in {split!r})" if name != split else ""
            raise ValueError(
                f"dataset {builder.info.name!r} has no split {name!r}{within}; available: "
                f"{available}, or {ALL!r} (every split)"
            )
    return list(dict.fromkeys(names))


def holdout_splits(builder: Any, split: str) -> tuple[str, str]:
    """(training split, validation split) of a dataset whose run trains on `split`, by Octo's
    rule (module docstring): (`split`, ``val``) when the dataset has a ``val`` split, else
    (``split[:95%]``, ``split[95%:]``), which needs `split` to be a plain split name."""
    split_names(builder, split)
    if VAL in builder.info.splits and split != VAL:
        return split, VAL
    if split not in builder.info.splits:  # a slice or union: TFDS cannot slice it again
        raise ValueError(
            f"dataset {builder.info.name!r} has no {VAL!r} split, and its training split "
            f"{split!r} is not a plain split name to hold {HOLDOUT_PERCENT}% of out: train on "
            f"a whole split (e.g. 'train'), or name the validation split (val_split)"
        )
    keep = 100 - HOLDOUT_PERCENT
    return f"{split}[:{keep}%]", f"{split}[{keep}%:]"
