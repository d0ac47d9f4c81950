"""A run and its resume with every path on a URL scheme (the in-memory ``ram://``): workdir,
checkpoints, metrics, TensorBoard, statistics cache, data_dir and language checkpoint. Nothing
may land on the local disk under a directory named after the scheme."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from flax import nnx

import train
from configs import pretrain
from octo_like import storage
from octo_like.data import synthetic
from octo_like.inference.policy import Policy
from octo_like.model.language.hf_checkpoint import load_t5_encoder
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.octo_model import OctoModel
from octo_like.training.run.metrics import read_jsonl
from tests import memory_fs

ROOT = "ram://url-workdir"


@pytest.fixture
def ram_data(tmp_path_factory):
    """The synthetic dataset and its tokenizer, written locally then copied to ``ram://``."""
    memory_fs.register()
    local = str(tmp_path_factory.mktemp("local-data"))
    synthetic.ensure_synthetic_bridge(local)
    write_tiny_t5_checkpoint(
        os.path.join(local, "tokenizer"), instructions=list(synthetic.DEFAULT_INSTRUCTIONS)
    )
    storage.copy_tree(local, f"{ROOT}/data")
    yield f"{ROOT}/data"
    memory_fs.clear(ROOT)


@pytest.mark.slow
def test_run_and_resume_with_every_path_on_a_url(ram_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URL treated as a local path would appear here
    workdir = f"{ROOT}/run"
    config = pretrain.get_config("debug")
    config.data_dir = ram_data
    config.data.statistics_cache_dir = f"{ROOT}/stats"
    config.model.language.checkpoint_dir = f"{ram_data}/tokenizer"
    config.tensorboard = True

    first = train.main(config, workdir, stop_at_step=2)
    assert (first.start_step, first.final_step) == (0, 2)
    assert storage.listdir(f"{workdir}/checkpoints") == ["2", "language_assets"]
    second = train.main(config, workdir)  # a fresh checkpointer: the step comes back down
    assert (second.start_step, second.final_step) == (2, 4)

    train_steps = [
        e["step"] for e in read_jsonl(f"{workdir}/metrics.jsonl") if e["split"] == "train"
    ]
    assert train_steps == [1, 2, 3, 4]
    assert storage.listdir(f"{workdir}/tensorboard")
    assert storage.exists(f"{workdir}/config.json")
    assert [n for n in storage.listdir(f"{ROOT}/stats") if n.endswith(".json")]
    assert set(storage.listdir(f"{workdir}/checkpoints")) == {"2", "4", "language_assets"}
    assert not [n for n in os.listdir(tmp_path) if n.startswith("ram:")]

    model = OctoModel.load_pretrained(f"{workdir}/checkpoints")
    assert set(model.dataset_statistics) == {synthetic.SYNTHETIC_BRIDGE}
    policy = Policy.from_checkpoint(f"{workdir}/checkpoints", warmup=False)
    metadata = policy.metadata()
    assert (metadata["checkpoint"], metadata["step"]) == (f"{workdir}/checkpoints", 4)
    tasks = model.create_tasks(texts=["open the drawer"])
    assert tasks["language_tokens"].shape == (1, 16)


def test_t5_checkpoint_reads_the_same_from_a_url(tmp_path):
    memory_fs.register()
    local = write_tiny_t5_checkpoint(str(tmp_path / "t5"))
    url = "ram://t5-url/t5"
    storage.copy_tree(local, url)
    try:
        from_disk, tokenizer_disk = load_t5_encoder(local)
        from_url, tokenizer_url = load_t5_encoder(url)
        leaves = zip(
            jax.tree.leaves(nnx.state(from_disk, nnx.Param)),
            jax.tree.leaves(nnx.state(from_url, nnx.Param)),
            strict=True,
        )
        for a, b in leaves:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        text = ["pick up the spoon"]
        np.testing.assert_array_equal(tokenizer_disk(text)["tokens"], tokenizer_url(text)["tokens"])
    finally:
        memory_fs.clear("ram://t5-url")
