"""Entry point kept for sbatch scripts written before the in-job runner had its own module (`python -m
toolkit.jobs.slurm.executor run JOB.json`): forwards to toolkit.queue.slurm.runner."""

import sys

from toolkit.queue.slurm.runner import main

if __name__ == "__main__":
    sys.exit(main())
