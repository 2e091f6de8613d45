"""The background job system: SQLite store, worker, executors (local, Slurm), sweeps.

    store.py     the SQLite job store: submit, atomic claim, heartbeats, states
    worker.py    `python -m toolkit worker`: claims jobs and runs their steps through an executor
    executor.py  the executor interface and the local (subprocess) executor
    sweep.py     sweeps (ratios x seeds x budgets): plan, idempotent submission, progress
    slurm/       the Slurm executor and the in-job runner
"""
