"""Pretraining configurations. The argument picks the model size and the data:

    python train.py --config configs/pretrain.py:debug --workdir runs/debug
    python train.py --config configs/pretrain.py:laptop --workdir runs/laptop      # make train
    python train.py --config configs/pretrain.py:laptop_long --workdir runs/laptop_long
    python train.py --config configs/pretrain.py:small,oxe_magic_soup --workdir runs/octo_small \
        --config.data_dir=/data/oxe --config.model.language.checkpoint_dir=/models/t5-base
    python train.py --config configs/pretrain.py:base,bridge --workdir runs/octo_base \
        --config.data_dir=/data/oxe --config.model.language.checkpoint_dir=/models/t5-base \
        --config.mesh.fsdp=8

`debug` trains on a synthetic Bridge-format dataset generated into the workdir (half a minute
to a minute on 2 cores, mostly compilation; used by tests). `laptop` (what `make train` runs)
trains on MetaWorld scripted-expert demonstrations of five tasks, collected into
~/.cache/octo_like/metaworld on first use (no download);
`laptop,metaworld_cross` adds the wrist-camera embodiment, `laptop,metaworld_stereo` sees each scene
from two fixed cameras; `laptop_long` is the same tasks grown into a ~30-minute run (seen from
the `front` camera, png frames, proprio, 200 demonstrations per task, an L1 head, 6,000 steps;
`laptop_long,metaworld_front_wrist` adds a wrist camera). `laptop_broad` is `laptop_long`
grown wide: all 50 MT50 tasks seen by two embodiments (the `front` and the corner `default`
camera, mix `metaworld_broad`), minus any tasks or task families held out with
`--config.simulation.held_out=family:door,window-open` (their demonstrations are never
collected for pretraining); see docs/results.md, "Does pretraining pay?".
The sizes `tiny`, `small` and `base` read a named mix from data_dir, condition on a frozen
T5-base (a local Hugging Face-format directory: config.json, model.safetensors, spiece.model)
and balance the mix by dataset size, as Octo does.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

SIZES = ("dummy", "tiny", "small", "base")


def get_config(arg: str = "laptop") -> ml_collections.ConfigDict:
    preset, _, mix = arg.partition(",")
    broad = preset == "laptop_broad"
    long_run = preset == "laptop_long" or broad
    preset = "laptop" if long_run else preset
    generated = preset in ("debug", "laptop")
    simulated = preset == "laptop"
    simulated_mixes = (
        "metaworld",
        "metaworld_cross",
        "metaworld_stereo",
        "metaworld_default_wrist",
        "metaworld_front",
        "metaworld_front_wrist",
        "metaworld_broad",
    )
    if simulated and mix not in ("", *simulated_mixes):
        raise ValueError(
            f"laptop trains on a simulated mix ({', '.join(simulated_mixes)}), not {mix!r}"
        )
    wrist = not simulated or mix in (
        "metaworld_cross",
        "metaworld_default_wrist",
        "metaworld_front_wrist",
    )
    secondary = mix == "metaworld_stereo"
    size = {"debug": "dummy", "laptop": "tiny"}.get(preset, preset)
    if size not in SIZES:
        raise ValueError(
            f"unknown preset {preset!r}; use debug, laptop, laptop_long, laptop_broad or one of "
            f"{SIZES}"
        )
    small_images = generated
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_steps = {"debug": 4, "laptop": 300}.get(preset, 300_000)
    c.log_every = {"debug": 1, "laptop": 20}.get(preset, 100)
    c.eval_every = {"debug": 2, "laptop": 100}.get(preset, 5000)
    c.eval_batches = 2 if generated else 16
    # Action chunks sampled per held-out state at each evaluation, scored with Octo's metrics
    # (val/sampled_mse, xyz_angle, xyz_accuracy, gripping_accuracy) beside the loss; 0: off.
    c.eval_action_samples = 8
    # debug: synthetic data generated into <workdir>/data; laptop: MetaWorld demonstrations
    # collected into simulation.cache_dir; otherwise a named mix under data_dir.
    if simulated:  # laptop_long: the front camera (docs/results.md, runs Y-BC)
        default_mix = "metaworld_broad" if broad else "metaworld_front"
        c.mix = mix or (default_mix if long_run else "metaworld")
    else:
        c.mix = "synthetic" if generated else (mix or "oxe_magic_soup")
    c.data_dir = ""
    c.val_split = "val"

    image_size = 64 if small_images else 256
    wrist_size = 32 if small_images else 128
    c.data = dict(
        # Octo: global batch 2048 (per host: 2048 / processes). Octo's shuffle buffer holds
        # 500k frames on one loader; here each process shuffles its own shard in 100k.
        batch_size={"debug": 8, "laptop": 16}.get(preset, 2048),
        shuffle_buffer=1000 if generated else 100_000,
        balance_by_size=not generated,  # Octo: each dataset's weight x its size
        normalization="normal",
        statistics_cache_dir="~/.cache/octo_like/statistics",
        skip_bad_episodes=False,
        cache_trajectories=generated,
        trajectory=dict(
            window=2,
            action_horizon=4,
            goal_relabeling=True,
            subsample_length=100 if not generated else None,
            # Octo's task augmentation: a frame with both an instruction and a goal image
            # keeps exactly one of them, each half the time, so either alone works.
            language_only_prob=0.5,
            goal_only_prob=0.5,
        ),
        frame=dict(
            cameras=dict(
                primary=dict(size=(image_size, image_size), augment=dict()),
                **(
                    dict(secondary=dict(size=(image_size,) * 2, augment=dict()))
                    if secondary
                    else {}
                ),
                **(dict(wrist=dict(size=(wrist_size, wrist_size), augment=None)) if wrist else {}),
            ),
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
        transformer=size,
        image_tokenizers=tuple(
            dict(camera=camera, goal_fusion=True, num_features=64 if generated else 512)
            for camera in (
                "primary",
                *(("secondary",) if secondary else ()),
                *(("wrist",) if wrist else ()),
            )
        ),
        proprio=None,
        # Scale presets: frozen T5-base from --config.model.language.checkpoint_dir (its output
        # is not back-propagated and its weights get no optimizer moments). debug/laptop train a
        # small encoder from scratch over a tokenizer made from their instructions.
        language=dict(
            encoder="small" if generated else "t5",
            checkpoint_dir="",
            small_width=64,
            frozen=not generated,
        ),
        window=2,
        max_horizon=10,  # timestep embeddings: fine-tuning with another window keeps them
        action_horizon=4,
        action_dim=4 if simulated else 7,  # MetaWorld: delta xyz + grip
        head=dict(
            kind="diffusion",
            kwargs=dict(
                hidden_dim=64 if generated else 256,
                # Octo: the raw step index as time input and Octo's reverse update.
                time_input="unit" if generated else "step",
                sampler="posterior" if generated else "octo",
            ),
        ),
        # The scale presets compute what Octo-1.5 computes (docs/octo.md; tested against
        # Octo's own outputs); debug/laptop keep octo_like's choices (ModelConfig says why).
        repeat_task_tokens=not generated,
        mask_padded_readouts=generated,
        goal_padding="grey" if generated else "pixels",
        language_token_mask=generated,
        stem_standardization="rsqrt_variance" if generated else "std_plus_eps",
        # auto: bfloat16 compute on GPU/TPU (float32 master weights), float32 on CPU.
        dtype="float32" if generated else "auto",
        remat="none",  # none | full | dots_saveable | dots_no_batch (memory for compute)
        scan_layers=False,  # True: one compiled block for all layers (faster compiles)
        attention="auto",  # lean on CPU, cuDNN flash attention on GPU, einsum on TPU
    )
    # Scale presets follow Octo's published pretraining recipe (Octo paper, "Training details",
    # and its released pretraining config): AdamW at peak 3e-4, 2000 linear warmup steps, then
    # inverse-square-root decay with timescale 10000; weight decay 0.1; gradient clip 1.0;
    # batch 2048 for 300k steps (data above). debug/laptop: a cosine over their short runs.
    c.optimizer = dict(
        learning_rate=3e-4,
        schedule="warmup_cosine" if generated else "rsqrt",
        warmup_steps={"debug": 1, "laptop": 20}.get(preset, 2000),
        rsqrt_timescale=placeholder(int) if generated else 10_000,
        weight_decay=0.01 if generated else 0.1,
        b2=0.95 if generated else 0.999,  # Octo: optax.adamw's default b2
        clip_gradient_norm=1.0,
        gradient_accumulation_steps=1,
        frozen=(),
        ema_decay=placeholder(float),  # e.g. 0.999: evaluate and save a moving average
    )
    # Per slice: data x fsdp devices (-1: the rest); across TPU slices: dcn_data x dcn_fsdp
    # (dcn_data=-1: every remaining slice on the data axis).
    c.mesh = dict(data=-1, fsdp=1, dcn_data=-1, dcn_fsdp=1, fsdp_min_size_mb=4.0)
    # enabled: None reads OCTO_* variables; True lets JAX detect the cluster (TPU pod, SLURM...).
    # shared_workdir: a local --workdir that every host mounts (else multi-host needs gs://).
    c.distributed = dict(enabled=placeholder(bool), shared_workdir=False)
    c.checkpoint = dict(
        save_every={"debug": 2, "laptop": 100}.get(preset, 5000), keep_last=3, keep_every=None
    )
    # How the simulated mix is collected on first use (ignored for other mixes or with data_dir).
    c.simulation = dict(
        # Task names, family:NAME (octo_like/envs/tasks.py FAMILIES) or all (MT50)...
        tasks="reach,push,pick-place,button-press-topdown,drawer-open",
        held_out="",  # ...minus these (same syntax): never collected for pretraining
        episodes_per_task=12,
        val_episodes_per_task=2,
        image_size=image_size if simulated else 64,
        expert_noise=0.1,
        steps_after_success=0,  # expert steps kept after success (the policy learns to stop)
        image_encoding="jpeg",  # how frames are stored: jpeg | png (lossless)
        action_labels="executed",  # executed (noisy) | expert (noise-free, DART)
        expert_gain=1.0,  # x the expert's xyz command before clipping: larger final corrections
        workers=2,
        seed=0,
        cache_dir="~/.cache/octo_like/metaworld",
        # Closed-loop success every eval_every steps and at the end (0: off; simulated mixes).
        eval_every=0,
        eval_episodes=5,
        eval_max_steps=150,
    )
    c.tensorboard = True
    c.wandb_project = ""
    # Persistent XLA compilation cache: "workdir" (<workdir>/compilation_cache), "" (off) or a
    # directory shared by runs; a restarted run then skips recompiling its step.
    c.compilation_cache = "workdir"
    c.profile_steps = ""  # "START,END": jax.profiler trace into <workdir>/tensorboard
    c.prefetch_batches = 2  # global batches put on the devices ahead of the running step
    c.platform = ""  # "tpu" / "gpu": refuse to start on anything else ("" = any)
    if long_run:
        lengthen_for_half_an_hour(c)
    if broad:
        widen_to_mt50(c)
    c.lock()
    return c


def lengthen_for_half_an_hour(c: ml_collections.ConfigDict) -> None:
    """`laptop_long`: the laptop preset as a ~30-minute run on 2 cores (docs/results.md,
    "The 30-minute recipe", has what each choice was worth): the `front` camera (mix set in
    get_config), png frames, proprio, 200 demonstrations per task, no random
    crop (the camera is fixed: a crop moves a goal marker by up to 7 px), an L1 regression head
    (the scripted experts are unimodal, so a diffusion head's extra cost buys nothing here),
    language-only tasks (what the evaluation gives), batch 32 at peak learning rate 1e-3 for
    6,000 steps (BA-BC after the first-frame fix, seeds 0-2: 78, 84 and 88 of 100), and
    closed-loop success logged every 1,500 steps."""
    c.num_steps = 6000
    c.log_every, c.eval_every = 100, 1500
    c.checkpoint.save_every = 1500
    c.data.batch_size = 32
    for camera in c.data.frame.cameras.values():
        if camera.augment is not None:  # fixed cameras: no crop, colour jitter kept
            camera.augment = dict(random_resized_crop_scale=None)
    c.model.proprio = dict(mode="linear", num_features=64)
    # Run I vs H: L1 head + language-only tasks, 43% -> 69% (74% executing 2 actions a chunk).
    c.model.head = dict(kind="l1", kwargs=dict())
    c.data.trajectory.goal_relabeling = False  # no goal images: every frame is told in words
    c.data.trajectory.language_only_prob = 0.0
    c.data.trajectory.goal_only_prob = 0.0
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 200
    c.simulation.episodes_per_task = 200  # 4x run C's 50: 43% vs 36% (collected once, ~4 min)
    c.simulation.image_encoding = "png"  # the frames the policy sees in the simulator, exactly
    c.simulation.eval_every = 1500
    c.simulation.eval_episodes = 4


def widen_to_mt50(c: ml_collections.ConfigDict) -> None:
    """`laptop_broad`: `laptop_long`'s model and optimizer on every MT50 task not held out, seen
    from two viewpoints (mix `metaworld_broad`: `front` and the corner `default`), 30
    demonstrations per task and viewpoint (2 x 30 x 50 = 3,000 episodes when nothing is held
    out), 6,000 steps, no in-training evaluation (the transfer benchmark evaluates). Breadth is
    what Octo's pretraining buys transfer with: many tasks, scenes and robots."""
    c.simulation.tasks = "all"
    c.simulation.episodes_per_task = 30
    c.simulation.val_episodes_per_task = 1
    c.simulation.eval_every = 0
    c.eval_every = 3000
    c.checkpoint.save_every = 3000
