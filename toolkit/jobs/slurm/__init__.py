"""Slurm behind the executor interface: `executor.py` submits and polls, `runner.py` (inside the job) runs the steps."""
