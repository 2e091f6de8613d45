"""Slurm behind the executor interface: `cluster.py` the commands and resource requests, `executor.py` submits
and polls, `runner.py` (inside the job) runs the steps."""
