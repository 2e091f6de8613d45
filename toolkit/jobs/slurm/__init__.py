"""Compatibility only: sbatch scripts written before the split run these modules (see toolkit/jobs/__init__.py).

    runner.py    `python -m toolkit.jobs.slurm.runner run job.json` -> toolkit.queue.slurm.runner
    executor.py  `python -m toolkit.jobs.slurm.executor run job.json` -> toolkit.queue.slurm.runner
"""
