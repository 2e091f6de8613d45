"""Evaluation and comparison: batched VQA evaluation, the official VQA metric, statistics, the comparison and the
study's recommendation.

    evaluate.py        `evaluate_adapter` / `evaluate_base`: batched greedy generation, results into the run folder
    scoring.py         VQA accuracy exactly as the official VQAv2 evaluation (`python -m toolkit score`)
    retrieval.py       generative image-text retrieval (the alignment metric)
    stats.py           t-intervals (scipy.stats), the two-level bootstrap (images clustered), Holm, power, seeds needed
    verdict.py         which runs pool as seeds (the settings fingerprint), the records and rules of the verdict
    compare.py         the comparison across adapters: the store's rows, groups, tests against the baseline, verdict
    rows.py            `ComparisonRow`: the keys of a comparison row (one evaluation of one adapter), documented
    tables.py          the comparison's tables and exports (JSON, CSV)
    charts.py          Altair charts of a comparison and of the recommendation's ternary plot
    surface.py         Scheffé mixture surfaces over the ratio's proportions, simplex grids, simple ratios
    recommendation.py  the study's answer: use / candidate / none, selection-adjusted, and the confirmation's outcome
    calibration.py     simulated studies with a known truth, to calibrate the recommendation (tests, bench)
"""
