"""Experiment trackers: the run-logger interface and Weights & Biases."""
