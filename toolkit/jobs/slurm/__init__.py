"""Slurm behind the executor interface: `executor.py` submits and polls, the in-job runner runs the steps."""
