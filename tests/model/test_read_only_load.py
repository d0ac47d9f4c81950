"""Loading a checkpoint reads it only, and says nothing about that (issue 12, item 5)."""

from __future__ import annotations

import logging
import os
import stat

import numpy as np

from octo_like.model.octo_model import OctoModel
from tests.training.test_finetune import readouts, tiny_batch, tiny_config, tiny_model


def test_loading_a_read_only_checkpoint_is_silent_and_leaves_it_untouched(tmp_path, caplog):
    model = tiny_model(tiny_config(), tiny_batch())
    directory = str(tmp_path / "checkpoints")
    model.save_pretrained(3, directory)
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), stat.S_IREAD | stat.S_IEXEC)
    before = sorted(os.walk(directory))
    filters = list(logging.getLogger("absl").filters)  # a caller's own filters stay

    with caplog.at_level(logging.WARNING):
        loaded = OctoModel.load_pretrained(directory)
    notices = [r.getMessage() for r in caplog.records if "read only" in r.getMessage().lower()]
    assert notices == [], notices
    assert logging.getLogger("absl").filters == filters  # the filter is scoped to the load
    assert sorted(os.walk(directory)) == before
    np.testing.assert_allclose(readouts(loaded, tiny_batch()), readouts(model, tiny_batch()))

    # orbax still warns outside a load (the filter is not global)
    with caplog.at_level(logging.WARNING):
        logging.getLogger("absl").warning("Given directory is read only=%s", directory)
    assert any("read only" in r.getMessage() for r in caplog.records)
