"""The optimizer: AdamW, learning-rate schedules, and the per-parameter masks (frozen, weight
decay, learning-rate multipliers) chosen by regexes over parameter paths."""
