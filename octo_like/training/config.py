"""The training run's typed configuration, built once from the locked ml_collections config."""

from __future__ import annotations

import dataclasses
from typing import Any

from octo_like import storage
from octo_like.config.typed import ConfigError, build, to_plain
from octo_like.data import synthetic
from octo_like.data.config import DataConfig, DatasetSource
from octo_like.data.generated import GeneratedDatasetsFactory
from octo_like.model.config import ModelConfig
from octo_like.training.checkpoints.checkpoint import CheckpointConfig
from octo_like.training.optim.optimizer import OptimizerConfig
from octo_like.training.parallel.distributed import DistributedConfig
from octo_like.training.parallel.runtime import PLATFORMS
from octo_like.training.parallel.sharding import MeshConfig
from octo_like.training.run.profiling import parse_profile_steps

SYNTHETIC = "synthetic"
# Mixes of simulated datasets that are collected into `simulation.cache_dir` on first use when
# no data_dir is given (the embedded default data of `make train`).
SIMULATED_MIXES = (
    "metaworld",
    "metaworld_cross",
    "metaworld_stereo",
    "metaworld_default_wrist",
    "metaworld_front",
    "metaworld_front_wrist",
    "metaworld_broad",
)


@dataclasses.dataclass(frozen=True)
class SimulationDataConfig:
    """How a simulated mix is collected when it is not read from data_dir: plain settings, read
    by the entry point's `GeneratedDatasets` (`octo_like/envs/simulated_data.py`)."""

    # Task names, ``family:NAME`` (octo_like/envs/tasks.py FAMILIES) or ``all`` (MT50), minus
    # `held_out` (same syntax): held-out tasks' demonstrations never enter pretraining.
    tasks: str = "reach,push,pick-place,button-press-topdown,drawer-open"
    held_out: str = ""
    episodes_per_task: int = 12
    val_episodes_per_task: int = 2
    image_size: int = 64
    expert_noise: float = 0.1
    steps_after_success: int = 0  # expert steps kept after a demonstration succeeds
    # How frames are stored: "png" keeps every pixel as rendered (what the policy sees in the
    # simulator); "jpeg" at 64 px blurs a 2-3 px goal marker into its background.
    image_encoding: str = "jpeg"
    # What a demonstration step's action is: "executed" (the noisy command that moved the arm)
    # or "expert" (the expert's noise-free command in that state; DART).
    action_labels: str = "executed"
    expert_gain: float = 1.0  # scales the expert's xyz command before clipping (its corrections)
    workers: int = 2
    seed: int = 0
    cache_dir: str = "~/.cache/octo_like/metaworld"
    # Closed-loop success of the model being trained, every `eval_every` steps and at the end
    # (0: off), `eval_episodes` per task in spawned simulator workers, logged as sim/*.
    eval_every: int = 0
    eval_episodes: int = 5
    eval_max_steps: int = 150

    def __post_init__(self):
        if self.image_encoding not in ("jpeg", "png"):
            raise ValueError(
                f"config.simulation.image_encoding must be jpeg or png, got {self.image_encoding!r}"
            )
        if self.action_labels not in ("executed", "expert"):
            raise ValueError(
                "config.simulation.action_labels must be executed or expert, "
                f"got {self.action_labels!r}"
            )
        if not self.expert_gain > 0:
            raise ValueError(f"config.simulation.expert_gain must be > 0, got {self.expert_gain}")
        if self.eval_every < 0 or self.eval_episodes < 1 or self.eval_max_steps < 1:
            raise ValueError(
                "config.simulation: eval_every must be >= 0, eval_episodes and eval_max_steps "
                f">= 1 (got {self.eval_every}, {self.eval_episodes}, {self.eval_max_steps})"
            )


# The discrete head's bins follow the action normalization: mean/std-normalized actions get
# +-3 std (99.7% of a Gaussian; [-1, 1] would put a third of them in the edge bins), bounds-
# normalized ones their [-1, 1] range. An explicit range must cover at least _MIN_COVER.
_DISCRETE_RANGE = {"normal": (-3.0, 3.0), "bounds": (-1.0, 1.0)}
_MIN_COVER = {"normal": 2.0, "bounds": 1.0}


def tie_discrete_bins(model: ModelConfig, normalization: str) -> ModelConfig:
    """`model` with the discrete head's ``low``/``high`` set from `normalization` when unset;
    a range that cannot hold the normalized actions is a ConfigError."""
    head = model.head
    if head.kind != "discrete":
        return model
    normalization = str(normalization)
    kwargs = dict(head.kwargs or {})
    given = {"low", "high"} & set(kwargs)
    if normalization not in _DISCRETE_RANGE:
        if len(given) < 2:
            raise ConfigError(
                "the discrete head needs model.head.kwargs.low/high when data.normalization is "
                f"{normalization!r} (actions keep their raw scale)"
            )
        return model
    if not given:
        kwargs["low"], kwargs["high"] = _DISCRETE_RANGE[normalization]
    else:
        low, high = kwargs.get("low", -1.0), kwargs.get("high", 1.0)
        cover = _MIN_COVER[normalization]
        if low > -cover or high < cover:
            raise ConfigError(
                f"model.head.kwargs.low/high = [{low}, {high}] cannot hold {normalization}-"
                f"normalized actions (they need at least [-{cover}, {cover}]; the default for "
                f"{normalization} is {list(_DISCRETE_RANGE[normalization])}): widen the range or "
                "change data.normalization"
            )
    return dataclasses.replace(model, head=dataclasses.replace(head, kwargs=kwargs))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    seed: int
    num_steps: int
    log_every: int
    eval_every: int
    eval_batches: int
    mix: str
    data_dir: str
    # The split held-out loss is computed on: "val" (skipped, with a warning, for a dataset that
    # lacks it), "" / None (no validation) or "auto" (Octo's rule): "val" where a dataset has
    # it, else the last 5% of its training split, which then trains on the first 95%
    # (`data/splits.py`, resolved at the run's start by `run_data.run_splits`).
    val_split: str | None
    data: DataConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    mesh: MeshConfig
    distributed: DistributedConfig
    checkpoint: CheckpointConfig
    tensorboard: bool
    wandb_project: str
    simulation: SimulationDataConfig = SimulationDataConfig()
    # "workdir": <workdir>/compilation_cache; "": off; else a (shared) directory.
    compilation_cache: str = "workdir"
    # "START,END": a jax.profiler trace of steps START+1..END into <workdir>/tensorboard.
    profile_steps: str = ""
    # Global batches prepared on the devices ahead of the running step (background thread).
    prefetch_batches: int = 2
    # "tpu" / "gpu" / "cpu": fail at start-up unless JAX runs there ("" accepts any).
    platform: str = ""
    # Action chunks sampled per held-out state at each evaluation, scored with Octo's metrics
    # (training/run/action_metrics.py) beside the loss; 0: loss only. Octo samples 8.
    eval_action_samples: int = 8

    @property
    def collects_simulated_data(self) -> bool:
        """True when the mix is simulated and collected on first use (no data_dir given)."""
        return self.mix in SIMULATED_MIXES and not self.data_dir

    def __post_init__(self):
        for name in ("num_steps", "log_every", "eval_every", "prefetch_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.eval_action_samples < 0:
            raise ConfigError("eval_action_samples must be >= 0 (0: no sampled-action metrics)")
        if self.platform not in PLATFORMS:
            raise ConfigError(f"platform must be one of {PLATFORMS[1:]} or '' (any)")
        try:
            parse_profile_steps(self.profile_steps)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        object.__setattr__(self, "model", tie_discrete_bins(self.model, self.data.normalization))
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


def distributed_config(config: Any) -> DistributedConfig:
    """Just the ``distributed`` section, validated: entry points join the hosts with it before
    anything else touches JAX."""
    return build(DistributedConfig, to_plain(config).get("distributed", {}), "config.distributed")


def synthetic_data_dir(workdir: str) -> str:
    return storage.join(workdir, "data")


def parse_train_config(
    config: Any, workdir: str, *, generated: GeneratedDatasetsFactory | None = None
) -> TrainConfig:
    """Locked ConfigDict (or mapping) -> TrainConfig; the mix decides ``data.datasets``.

    `generated`: builds the `GeneratedDatasets` of a mix collected on first use (a simulated
    mix without data_dir; train.py passes `octo_like.envs.simulated_data.SimulatedDatasets`),
    which says where its datasets and tokenizer live.
    """
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
            language["checkpoint_dir"] = storage.join(data_dir, "tokenizer")
    elif mix in SIMULATED_MIXES and not data_dir:
        if generated is None:
            raise ConfigError(
                f"mix {mix!r} without --config.data_dir is collected in the simulator on first "
                "use: run it through train.py (or give data_dir, the TFDS root of collected data)"
            )
        simulation = build(SimulationDataConfig, raw.get("simulation", {}), "config.simulation")
        provider = generated(mix, simulation)
        datasets = provider.sources()
        language = raw.get("model", {}).get("language", {})
        if language.get("encoder") == "small" and not language.get("checkpoint_dir"):
            language["checkpoint_dir"] = provider.tokenizer_dir()
    else:
        from octo_like.data.oxe.mixes import resolve_mix

        weighted = resolve_mix(mix)  # an unknown mix is named before a missing data_dir
        if not data_dir:
            raise ConfigError(f"mix {mix!r} needs --config.data_dir (the TFDS data root)")
        datasets = [
            DatasetSource(name=spec.name, location=data_dir, weight=weight)
            for spec, weight in weighted
        ]
    raw["data"] = {**raw.get("data", {}), "datasets": [dataclasses.asdict(d) for d in datasets]}
    return build(TrainConfig, raw, "config")
