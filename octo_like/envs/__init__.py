"""Simulated environments (MetaWorld on MuJoCo): embodiment variants, the environment wrapper,
spawned worker processes, demonstration collection and closed-loop evaluation; the transfer
benchmark built on them is its own room, `envs/transfer/`.

This package's `__init__` imports nothing: worker processes import only `variants`, `tasks`,
`metaworld_env` and `worker`, which never import TensorFlow (a process that has imported
TensorFlow segfaults at its first MuJoCo render).
"""
