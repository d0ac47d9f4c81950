"""The convergence check's fixed runs (issue 70): small pretrainings on the committed Bridge
shard whose loss curves are compared with a band measured over seeds
(configs/convergence_reference/<preset>.json; scripts/convergence.py measures and checks):

    python scripts/convergence.py check --preset full      # make convergence, 89 s on 2 cores
    python scripts/convergence.py check --preset quick     # in make test, 36 s

`full`: the debug model (dummy transformer, 64-px primary camera, diffusion head, small
language encoder over a tokenizer made from the shard's instructions) for 600 steps at batch
16, ~10 passes over the shard's 25 episodes, validated at the end on its 'val' split. `quick`:
the same run cut to 180 steps at batch 8, its band measured the same way.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain

PRESETS = ("full", "quick")


def get_config(arg: str = "full") -> ml_collections.ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"unknown convergence preset {arg!r}; use one of {PRESETS}")
    quick = arg == "quick"
    c = pretrain.get_config("debug")
    c.mix = "bridge"
    c.data_dir = ""  # the runner sets the shard's root (../shared/data by default)
    c.num_steps = 180 if quick else 600
    c.log_every = 1  # every step's loss: a curve point averages a sixth of the run
    c.eval_every = c.num_steps  # once, at the end
    c.eval_batches = 16  # 4 left the validation loss an sd of 0.11 across seeds (full preset)
    c.eval_action_samples = 4
    c.data.batch_size = 8 if quick else 16
    c.data.shuffle_buffer = 2000
    c.data.balance_by_size = False
    c.data.cache_trajectories = True  # 25 episodes: decoded once, kept in RAM
    c.data.frame.cameras = dict(primary=dict(size=(64, 64), augment=dict()))
    c.model.image_tokenizers = (dict(camera="primary", goal_fusion=True, num_features=64),)
    c.optimizer.warmup_steps = 10 if quick else 50
    c.checkpoint.save_every = c.num_steps
    c.tensorboard = False
    return c
