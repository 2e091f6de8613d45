"""The study layer above the queue: what to train (designs, sweeps), when to stop (halving), what it found and how
to confirm it, and how long it will take. It submits jobs to toolkit.queue; the queue never imports it.

    sweep.py     a sweep (ratios x seeds x budgets): its spec, its idempotent plan, its submission as queue jobs
    settings.py  a sweep's own options as settings groups (axes, evaluation, queueing, executor): their flags,
                 docs, defaults and bounds, which `sweep`, SweepSpec and the launch form read
    design.py    designs over the simplex (simplex-lattice, simplex-centroid, floors): a study's arms
    search.py    a successive-halving search (rungs, eta, noise rule) and the steps of one rung's job
    halving.py   the halving controller: decides each finished rung, queues the next (the rung jobs' follow-up hook)
    selection.py the halving rule (which arms a rung keeps), a rung's record entry, a run folder's score
    rung.py      `python -m toolkit.study.rung`: train a run to one rung's step of its full schedule, snapshot it
    packrun.py   a pack job's step (`python -m toolkit pack`): its arms trained in one process, then evaluated there;
                 cancelling one arm of a pack
    packsearch.py successive halving inside a pack: rungs as evaluation points of the running pack, its hook
    confirm.py   the recommendation of a sweep, its confirmation (fresh seeds, report split) and the controls
    report.py    one study followed from design to answer (its confirmations, progress, final answer)
    preflight.py checks before queueing: weights on this machine, dataset splits readable, 4-bit runnable
    measured.py  what a run took here (`RunRecord`) and the probes file (measured.jsonl)
    estimate.py  how long a sweep will take, from the rates measured here
    probe.py     measure a sweep's speed here before queueing it (its first job's steps, shortened)
    progress.py  a job's progress, scores and loss curves from its run folder, for the CLI and the app
"""
