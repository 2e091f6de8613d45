"""Evaluation and comparison: batched VQA evaluation, the official VQA metric, statistics, the comparison.

    evaluate.py  `evaluate_adapter` / `evaluate_base`: batched greedy generation, results into the run folder
    scoring.py   VQA accuracy exactly as the official VQAv2 evaluation (`python -m toolkit score`)
    stats.py     t-intervals, bootstrap and the distributions they need
    compare.py   the comparison across adapters: groups, statistics, verdict, charts
"""
