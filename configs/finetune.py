"""Fine-tuning configurations. The argument is ``MODE,TASK``:

    python finetune.py --config configs/finetune.py:lora,language --workdir runs/ft_lora \
        --config.pretrained_path=runs/laptop/checkpoints \
        --config.dataset.name=my_robot --config.dataset.location=/data/my_robot/1.0.0 \
        --config.model.action_dim=5

MODE: full | head_only | head_mlp_only | lora (what trains:
octo_like/training/finetuning/finetune.py), or scratch: the same model, data and settings with
no pretrained weight reused (the baseline fine-tuning must beat; scripts/benchmark_transfer.py
runs both).
TASK: language (instructions only), goal (goal images only: the language encoder is dropped) or
multimodal (both in the data; each frame keeps one of them, each half the time, so either alone
works at test time).

Model keys left None are the pretrained model's
(octo_like/training/finetuning/finetune_overrides.py), so by default the new model is the
pretrained one with the new data's action dim; change cameras with ``model.image_tokenizers``
(the pipeline loads the cameras the model reads; ``data.frame.cameras`` sets their sizes and
augmentation), add proprio with ``model.proprio``, swap the head with ``model.head``. The
three take Python literals on the command line too::

    --config.model.image_tokenizers="({'camera': 'primary'}, {'camera': 'wrist'})"
    --config.model.proprio="{'mode': 'linear'}"

A run warns, naming them with these lines, about cameras and proprio its dataset spec maps that
the model would not read. A dataset outside the OXE registry is registered here, without editing
library code, e.g.::

    c.data.extra_specs = dict(my_robot=dict(
        image_keys=dict(primary="front", wrist="hand"), proprio_key="joints",
        action_encoding="custom", action_normalization_mask=(True,) * 4 + (False,),
        standardize="identity"))

Defaults suit ~50 demonstrations (~5k frames): batch 64 for 5000 steps is ~60 passes over the
data (320,000 samples: about 70 minutes at the ~80 samples/s of a tiny model on 2 CPU cores);
trajectories are cached in RAM; checkpoints every 1000 steps.
"""

from __future__ import annotations

import ml_collections

# Typed "unset" values: None here means "as pretrained", and the command line can still set them
# (--config.model.action_dim=5); a bare None field would refuse any override.
placeholder = ml_collections.config_dict.placeholder

MODES = ("full", "head_only", "head_mlp_only", "lora", "scratch")
TASKS = ("language", "goal", "multimodal")


def get_config(arg: str = "full,language") -> ml_collections.ConfigDict:
    mode, _, task = arg.partition(",")
    task = task or "language"
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}; use one of {MODES}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {TASKS}")
    goal = task in ("goal", "multimodal")
    c = ml_collections.ConfigDict()
    c.mode = mode
    c.task = task
    c.pretrained_path = ""  # required: the pretrained run's checkpoints/ (or its workdir)
    c.pretrained_step = ml_collections.config_dict.placeholder(int)  # None: the latest
    # False: the checkpoint stores only parameters that differ from the pretrained one, plus a
    # reference to it (small; needs the pretrained checkpoint where it is to load).
    c.save_frozen_params = mode != "lora"
    c.lora = dict(rank=8, alpha=16.0, targets=("query", "key", "value", "out", "fc1", "fc2"))
    c.dataset = dict(name="", location="", split="train", weight=1.0)
    # Regexes of reused parameters to start fresh anyway, e.g. ("^head/",) for a new head on
    # the pretrained trunk, or ("^language_encoder/",) for a learned text encoder.
    c.reinitialize = ()
    # "data": normalize with the new data's statistics; "pretrained" / "pretrained:NAME": with
    # the checkpoint's of the same / the named dataset (the same robot keeps its scaling).
    c.statistics_from = "data"

    c.seed = 0
    c.num_steps = 5000
    c.log_every = 50
    c.eval_every = 1000
    c.eval_batches = 8
    # Action chunks sampled per held-out state at each evaluation, scored with Octo's metrics
    # (val/sampled_mse, xyz_angle, xyz_accuracy, gripping_accuracy) beside the loss; 0: off.
    c.eval_action_samples = 8
    # Held-out loss on: "val" (skipped, with a warning, when the dataset has no such split),
    # "" (none), or "auto" (Octo's): "val" if the dataset has it, else the last 5% of
    # dataset.split (train[95%:]), and training then reads the first 95% (train[:95%]).
    c.val_split = "val"
    c.data = dict(
        batch_size=64,
        shuffle_buffer=10_000,
        balance_by_size=False,
        normalization="normal",
        statistics_cache_dir="~/.cache/octo_like/statistics",
        # The split the normalization statistics are computed over: None, the split training
        # reads; or a TFDS split, e.g. "all" (every split, as Octo does). Cached per split.
        statistics_split=placeholder(str),
        skip_bad_episodes=False,
        cache_trajectories=True,  # a few dozen demos fit in RAM
        extra_specs={},
        trajectory=dict(
            window=2,
            action_horizon=4,
            goal_relabeling=goal,
            subsample_length=None,
            # multimodal: a frame keeps exactly one of instruction / goal image, each half the
            # time (Octo's task augmentation), so either alone works at test time.
            language_only_prob=0.5 if task == "multimodal" else 0.0,
            goal_only_prob={"goal": 1.0, "multimodal": 0.5}.get(task, 0.0),
        ),
        frame=dict(
            # None: the cameras the model reads, at the pretrained sizes (augmenting primary);
            # or e.g. dict(primary=dict(size=None, augment=dict()), side=dict(size=(128, 128))),
            # where a size None is the pretrained one (see finetune_overrides.py).
            cameras=placeholder(object),
            image_dropout_prob=0.0,
        ),
        # Threads per input stage; unset: scaled to the host's cores (see data/dataset.py).
        parallelism=dict(
            read=placeholder(int),
            trajectory=placeholder(int),
            frame=placeholder(int),
            ram_budget_gb=1.0,
        ),
    )
    c.model = dict(
        transformer=placeholder(str),
        # None: one tokenizer per pretrained camera; or e.g. (dict(camera="primary"),
        # dict(camera="side")), unset fields taken from the pretrained tokenizers. Typed
        # `object` so the command line can set a literal (see the docstring).
        image_tokenizers=placeholder(object),
        # None: as pretrained; "none": drop it; dict(mode=..., num_features=...)
        proprio=placeholder(object),
        language=dict(encoder="none") if task == "goal" else None,
        goal_image_cameras=placeholder(tuple),
        action_dim=placeholder(int),  # the new robot's action dim (None: the pretrained one)
        # kwargs: None inherits; a dict (a command-line literal) updates the pretrained head's
        head=dict(
            kind=placeholder(str), kwargs=placeholder(object), readout_tokens=placeholder(int)
        ),
        dtype=placeholder(str),  # float32, bfloat16 or auto (bf16 on accelerators)
        remat=placeholder(str),  # none, full, dots_saveable, dots_no_batch
        scan_layers=placeholder(bool),
        attention=placeholder(str),  # auto, lean, einsum, xla, cudnn
    )
    c.optimizer = dict(
        learning_rate=1e-3 if mode == "lora" else 3e-4,
        schedule="warmup_cosine",
        warmup_steps=250,
        weight_decay=0.01,
        weight_decay_rule="shape",  # shape | kernel (Octo's) | all (optimizer.py)
        b2=0.95,
        mu_dtype=placeholder(str),  # None: float32; "bfloat16" stores Adam's mu as Octo does
        clip_gradient_norm=1.0,
        gradient_accumulation_steps=1,
        frozen=(),  # extra regexes to freeze, on top of the mode's
        ema_decay=placeholder(float),  # e.g. 0.999: evaluate and save a moving average
    )
    # Per slice: data x fsdp devices (-1: the rest); across TPU slices: dcn_data x dcn_fsdp
    # (dcn_data=-1: every remaining slice on the data axis).
    c.mesh = dict(data=-1, fsdp=1, dcn_data=-1, dcn_fsdp=1, fsdp_min_size_mb=4.0)
    # enabled: None reads OCTO_* variables; True lets JAX detect the cluster (TPU pod, SLURM...).
    # shared_workdir: a local --workdir that every host mounts (else multi-host needs gs://).
    c.distributed = dict(enabled=placeholder(bool), shared_workdir=False)
    c.checkpoint = dict(save_every=1000, keep_last=2, keep_every=None)
    c.tensorboard = True
    c.wandb_project = ""
    # Persistent XLA compilation cache: "workdir" (<workdir>/compilation_cache), "" (off) or a
    # directory shared by runs; a restarted run then skips recompiling its step.
    c.compilation_cache = "workdir"
    c.profile_steps = ""  # "START,END": jax.profiler trace into <workdir>/tensorboard
    c.prefetch_batches = 2  # global batches put on the devices ahead of the running step
    c.platform = ""  # "tpu" / "gpu": refuse to start on anything else ("" = any)
    c.lock()
    return c
