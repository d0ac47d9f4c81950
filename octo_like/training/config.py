"""The training run's typed configuration, built once from the locked ml_collections config."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from octo_like.config.typed import ConfigError, build, to_plain
from octo_like.data import synthetic
from octo_like.data.config import DataConfig, DatasetSource
from octo_like.model.config import ModelConfig
from octo_like.training.checkpoint import CheckpointConfig
from octo_like.training.distributed import DistributedConfig
from octo_like.training.optimizer import OptimizerConfig
from octo_like.training.sharding import MeshConfig

SYNTHETIC = "synthetic"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    seed: int
    num_steps: int
    log_every: int
    eval_every: int
    eval_batches: int
    mix: str
    data_dir: str
    val_split: str | None
    data: DataConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    mesh: MeshConfig
    distributed: DistributedConfig
    checkpoint: CheckpointConfig
    tensorboard: bool
    wandb_project: str

    def __post_init__(self):
        for name in ("num_steps", "log_every", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        window = self.data.trajectory.window
        if self.model.window != window or self.model.action_horizon != (
            self.data.trajectory.action_horizon
        ):
            raise ConfigError(
                "model.window / model.action_horizon must equal data.trajectory.window / "
                f"action_horizon ({self.model.window}/{self.model.action_horizon} vs "
                f"{window}/{self.data.trajectory.action_horizon})"
            )
        missing = set(self.model.cameras) - set(self.data.cameras)
        if missing:
            raise ConfigError(
                f"model cameras {sorted(missing)} are not produced by data.frame.cameras "
                f"({list(self.data.cameras)})"
            )


def synthetic_data_dir(workdir: str) -> str:
    return os.path.join(workdir, "data")


def parse_train_config(config: Any, workdir: str) -> TrainConfig:
    """Locked ConfigDict (or mapping) -> TrainConfig; the mix decides ``data.datasets``."""
    raw = to_plain(config)
    mix, data_dir = raw.get("mix"), raw.get("data_dir") or ""
    if mix == SYNTHETIC:
        data_dir = data_dir or synthetic_data_dir(workdir)
        datasets = [DatasetSource(name=synthetic.SYNTHETIC_BRIDGE, location=data_dir)]
        raw.setdefault("data", {})["extra_specs"] = {
            synthetic.SYNTHETIC_BRIDGE: synthetic.synthetic_bridge_spec().to_dict()
        }
        language = raw.get("model", {}).get("language", {})
        if language.get("encoder") == "small" and not language.get("checkpoint_dir"):
            language["checkpoint_dir"] = os.path.join(data_dir, "tokenizer")
    else:
        from octo_like.data.oxe.mixes import resolve_mix

        if not data_dir:
            raise ConfigError(f"mix {mix!r} needs --config.data_dir (the TFDS data root)")
        datasets = [
            DatasetSource(name=spec.name, location=data_dir, weight=weight)
            for spec, weight in resolve_mix(mix)
        ]
    raw["data"] = {**raw.get("data", {}), "datasets": [dataclasses.asdict(d) for d in datasets]}
    return build(TrainConfig, raw, "config")
