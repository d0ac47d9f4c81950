"""Octo's two fine-tuning recipes as configs, for a converted Octo-1.5 checkpoint (docs/octo.md,
"Fine-tune as Octo does"). The argument is Octo's ``MODE,TASK`` or ``example02``:

    python finetune.py --config configs/finetune_octo.py:full,multimodal --workdir runs/ft \
        --config.pretrained_path=runs/octo_small \
        --config.dataset.name=my_robot --config.dataset.location=/data/my_robot/1.0.0

``MODE,TASK`` is Octo's scripts/configs/finetune_config.py: MODE full | head_only | head_mlp_only,
TASK image_conditioned | language_conditioned | multimodal (default full,multimodal). Its values:
batch 256, 50,000 steps, window 1, chunks of 4, `optax.adamw` (b2 0.999, first moment stored in
bfloat16, weight decay 0.01 on paths containing ``kernel``) after a 1.0 global-norm clip, the rate
0 -> 3e-4 over 2,000 steps then cosine to 0 at 50,000; the diffusion head's loss summed over the
action dimension (`loss_scale="action_dim"`); crop + colour jitter on the primary camera, colour
jitter on the wrist; T5 frozen. Octo's modes freeze by path: ``head_only`` everything outside the
head, new tokenizers included (they stay at their random initialization, as in Octo), and
``head_mlp_only`` is ``head_only`` for Octo-1.5's head (it has no attention pooling to freeze).

``example02`` is Octo's examples/02_finetune_new_observation_action.py: a new 14-dim L1 head over
50-step chunks pooling the readouts with attention (Octo's MAP head, dropout 0.1 in training),
its loss summed over the action dimension, a proprio tokenizer with one token per dimension
(Octo's LowdimObsTokenizer), only the primary camera, batch 128 for 5,000 steps, window 1,
no augmentation, `optax.adamw` with its defaults (weight decay 1e-4 on every parameter, no clip)
at 0 -> 3e-5 over 100 steps, then constant. `data.extra_specs` maps the dataset's keys (here
`top` and `state`, as in Octo's ALOHA example: edit them for yours, data/README.md).

Both read data as Octo's make_dataset_from_rlds does: validation on the dataset's ``val`` split,
or when it has none on ``train[95%:]`` while training reads ``train[:95%]`` (``val_split="auto"``),
and normalization statistics over every split (``data.statistics_split="all"``).

Each difference from Octo that remains is a row of docs/octo.md's recipe table.
"""

from __future__ import annotations

import ml_collections

from configs import finetune

OCTO_MODES = ("full", "head_only", "head_mlp_only")
# Octo's task -> (this project's task, goal-only probability): Octo's task augmentation keeps
# the goal image with `keep_image_prob` and the instruction otherwise.
OCTO_TASKS = {
    "image_conditioned": ("multimodal", 1.0),
    "language_conditioned": ("language", 0.0),
    "multimodal": ("multimodal", 0.5),
}
# Octo's head_only / head_mlp_only: "octo_transformer.*" frozen, i.e. everything but the head.
OUTSIDE_THE_HEAD = "^(?!head/)"
EXAMPLE02_ACTION_DIM, EXAMPLE02_CHUNK = 14, 50
WRIST_JITTER = dict(random_resized_crop_scale=None)  # Octo's wrist: colour only, no crop


def get_config(arg: str = "full,multimodal") -> ml_collections.ConfigDict:
    if arg == "example02":
        return _example02()
    mode, _, task = arg.partition(",")
    task = task or "multimodal"
    if mode not in OCTO_MODES:
        raise ValueError(f"unknown Octo fine-tuning mode {mode!r}; use one of {OCTO_MODES}")
    if task not in OCTO_TASKS:
        raise ValueError(f"unknown Octo task {task!r}; use one of {tuple(OCTO_TASKS)}")
    own_task, goal_only = OCTO_TASKS[task]
    c = finetune.get_config(f"full,{own_task}")
    c.seed = 42
    c.num_steps = 50_000
    c.eval_every = 5000
    c.checkpoint.save_every = 5000
    c.data.batch_size = 256
    _octo_splits(c)
    c.data.trajectory.window = 1
    c.data.trajectory.action_horizon = 4
    c.data.trajectory.goal_only_prob = goal_only
    c.data.trajectory.language_only_prob = 1.0 - goal_only
    c.data.frame.cameras = dict(
        primary=dict(size=None, augment=dict()), wrist=dict(size=None, augment=WRIST_JITTER)
    )
    c.model.head.kwargs = dict(loss_scale="action_dim")  # merged into the imported head's
    _octo_adamw(c, learning_rate=3e-4, weight_decay=0.01)
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 2000
    c.optimizer.weight_decay_rule = "kernel"
    c.optimizer.mu_dtype = "bfloat16"
    c.optimizer.clip_gradient_norm = 1.0
    if mode != "full":
        c.optimizer.frozen = (OUTSIDE_THE_HEAD,)
    return c


def _example02() -> ml_collections.ConfigDict:
    c = finetune.get_config("full,language")
    c.num_steps = 5000
    c.data.batch_size = 128
    _octo_splits(c)
    c.data.extra_specs = {
        "my_robot": dict(
            image_keys=dict(primary="top"),
            proprio_key="state",
            action_encoding="custom",
            action_normalization_mask=(True,) * EXAMPLE02_ACTION_DIM,
            standardize="identity",
        )
    }
    c.data.frame.cameras = dict(primary=dict(size=None, augment=None))  # no augmentation
    c.data.trajectory.window = 1
    c.data.trajectory.action_horizon = EXAMPLE02_CHUNK  # 50-step chunks...
    c.model.head.kind = "l1"  # ...from a new L1 head pooling with attention, its loss
    c.model.head.kwargs = dict(use_map=True, loss_scale="action_dim")  # summed over dims...
    c.model.action_dim = EXAMPLE02_ACTION_DIM  # ...of 14-dim actions
    # A new proprio tokenizer: one token per dimension holding its value (LowdimObsTokenizer)
    c.model.proprio = dict(mode="per_dim_value", num_features=1)
    c.model.image_tokenizers = (dict(camera="primary"),)  # the wrist camera removed
    _octo_adamw(c, learning_rate=3e-5, weight_decay=1e-4)
    c.optimizer.schedule = "constant"  # linear 0 -> 3e-5 over 100 steps, then constant
    c.optimizer.warmup_steps = 100
    c.optimizer.weight_decay_rule = "all"  # optax.adamw without a mask
    c.optimizer.clip_gradient_norm = None
    return c


def _octo_splits(c: ml_collections.ConfigDict):
    """Octo's splits: `val`, else a 95/5 hold-out of train; statistics over every split."""
    c.val_split = "auto"
    c.data.statistics_split = "all"


def _octo_adamw(c: ml_collections.ConfigDict, *, learning_rate: float, weight_decay: float):
    """`optax.adamw`'s moments (b1 0.9, b2 0.999, eps 1e-8) at Octo's rate and decay."""
    c.optimizer.learning_rate = learning_rate
    c.optimizer.weight_decay = weight_decay
    c.optimizer.b2 = 0.999
