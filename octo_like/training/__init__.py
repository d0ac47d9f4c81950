"""Training, one room per purpose (each sub-package's docstring says what it holds):

    config.py     the run's typed configuration, built once from the locked ml_collections config
    optim/        optimizer, schedules and per-parameter masks
    parallel/     mesh, sharding rules, multi-host start-up, the backend report
    checkpoints/  saving, verifying, resuming and staging checkpoints; the workdir and its lock
    run/          one run start to end: data and model at start-up, steps, loop, evaluation, metrics
    finetuning/   fine-tuning configs, new robots' inputs, reused and replaced weights
    pods/         the compile check for a TPU topology before a pod is booked
    benchmarks/   step time, MFU and profiler-trace summaries

Imports run down this list (tests/test_dependency_directions.py checks it).
"""
