"""Entry point kept for sbatch scripts written before the package layout (`python -m toolkit.slurm run JOB.json`).

New scripts run `python -m toolkit.queue.slurm.runner run`; this module only forwards to it.
"""

from toolkit.queue.slurm.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
