"""Checkpoints as policies: history / chunk execution wrappers and serving (fine-tuning issue)."""
