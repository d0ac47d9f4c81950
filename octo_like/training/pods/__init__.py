"""Checking a run for a pod before booking one: compile its exact train step for a TPU topology
from any machine (libtpu in compile-only mode) and read the collectives XLA chose."""
