"""The job queue: it runs commands in order and knows nothing of studies (those are toolkit.study's).

    states.py    JobState, the leaf every layer names a state by (no toolkit imports)
    store.py     the SQLite job store, one owner of jobs.db: submit, atomic claim, heartbeats, retries, sweeps as groups
    hooks.py     follow-up hooks named in a job's data (`meta["on_finish"] = "module:function"`), called once it ends
    worker.py    `python -m toolkit worker`: claims jobs, runs their steps through an executor, records, calls hooks
    lifecycle.py starting a worker from the app (`ensure_worker`), the worker lock, which workers are alive
    executor.py  the executor interface, its registry, and the local (subprocess) executor
    gpus.py      which GPUs this machine offers (`detect_gpus`) and which a worker may use (`parse_gpus`)
    actions.py   what a user does to a whole group of jobs: cancel, retry, wait
    slurm/       the Slurm executor: cluster commands (cluster.py), submit and poll (executor.py), in-job runner (runner.py)

How a run ends (exit codes, reasons, retry or not) is toolkit.outcomes'. Nothing here imports toolkit.study: work
that follows a job (a halving search's next rung) is a hook the job names, resolved by import string.
"""
