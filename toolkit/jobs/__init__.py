"""Compatibility only: the module paths that jobs queued, and sbatch scripts written, before the job system was
split into toolkit.queue (the queue) and toolkit.study (sweeps, halving, confirmation) still name.

    rung.py             `python -m toolkit.jobs.rung ...`, a queued halving job's train step -> toolkit.study.rung
    slurm/runner.py     `python -m toolkit.jobs.slurm.runner run job.json` (sbatch scripts) -> toolkit.queue.slurm.runner
    slurm/executor.py   `python -m toolkit.jobs.slurm.executor run job.json` (older sbatch scripts) -> the same runner

Each only forwards its command line; nothing in the toolkit imports this package (a test checks it). New jobs and
scripts name the new modules.
"""
