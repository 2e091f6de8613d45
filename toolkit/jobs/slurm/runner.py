"""Entry point kept for sbatch scripts written before the split (`python -m toolkit.jobs.slurm.runner run
JOB.json`): forwards to toolkit.queue.slurm.runner, which new scripts run."""

import sys

from toolkit.queue.slurm.runner import main

if __name__ == "__main__":
    sys.exit(main())
