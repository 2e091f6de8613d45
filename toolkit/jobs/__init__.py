"""The background job system: SQLite store, worker, executors (local, Slurm), sweeps.

    store.py     the SQLite job store: submit, atomic claim, heartbeats, states
    worker.py    `python -m toolkit worker`: claims jobs and runs their steps through an executor
    lifecycle.py starting a worker from the app (`ensure_worker`), the worker lock, which workers are alive
    executor.py  the executor interface and the local (subprocess) executor
    sweep.py     sweeps (ratios x seeds x budgets): plan, idempotent submission, progress
    slurm/       the Slurm executor (executor.py) and the in-job runner (runner.py)
How a run ends (exit codes, reasons, retry or not) is toolkit.outcomes'.
"""
