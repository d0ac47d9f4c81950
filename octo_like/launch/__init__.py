"""Launching a training run on a cluster through each platform's own engine (scripts/launch.py).

`recipes` builds the TPU VM ssh commands and the sbatch script, `gke` the JobSet manifest,
`slices` names the TPU topology a slice's accelerator type stands for, `gate` compiles the
run's train step for that topology before anything starts, and `launcher` puts them together.
Nothing here schedules or supervises processes itself; nothing here imports JAX (the compile
check runs as its own process).
"""
