"""Experiment configuration: ml_collections defaults validated into typed objects."""
