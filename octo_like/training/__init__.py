"""Train state, optimizer, sharding, checkpoints and the shared training loop (training issue)."""
