"""One process of the dress rehearsal: train.py, with the in-memory ``ram://`` filesystem
registered and filled with the frozen T5 directory first, so the run reads its language
checkpoint through a URL-scheme path (each process has its own in-memory filesystem).

    python -m tests.training.rehearsal_child T5_SOURCE T5_URL [train.py flags ...]
"""

from __future__ import annotations

import sys

from tests import memory_fs


def main() -> None:
    source, url, *flags = sys.argv[1:]
    memory_fs.register()
    from octo_like import storage

    storage.copy_tree(source, url)
    import train

    sys.argv = ["train.py", *flags]
    train._cli()


if __name__ == "__main__":
    main()
