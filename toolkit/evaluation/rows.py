"""The comparison row: one (adapter, evaluation) of the adapter store, as `compare.scan` builds it.

    >>> row: ComparisonRow = scan().rows[0]
    >>> row["ratio"], row["seed"], row["accuracy"]       # '1:4:1', 0, 47.25

A plain dict at run time (compare, verdict, recommendation, surface, tables and the app read and copy it);
`ComparisonRow` declares and documents every key the builder writes, for readers and type checkers.
"""

from __future__ import annotations

from typing import TypedDict


class ComparisonRow(TypedDict):
    """One evaluation of one adapter (or of a base model alone) in the store."""

    name: str
    """the adapter's name (its folder's name)"""
    kind: str
    """"adapter", or "base" for a base model's reference evaluation"""
    path: str
    """the run folder"""
    eval_tag: str
    """the evaluation's tag (eval/<tag>/): the eval set"""
    base_model: str | None
    """the base model's Hub id, else its id as trained (what a comparison holds one of)"""
    base_model_id: str | None
    """the base model's id as `train --model` named it"""
    dataset: str | None
    """the evaluated dataset's id"""
    split: str | None
    """the evaluated split"""
    n: int | None
    """questions evaluated"""
    budget: int | None
    """the allocation's budget in trainable parameters (None for a base model)"""
    budget_spec: str | None
    """the budget in words ("uniform rank 8 equivalent")"""
    mode: str | None
    """the allocation's mode: rank | share | audit"""
    ratio: str
    """the ratio's label ("1:4:1", "1:4:1 (share)"); a base model's row: "base\""""
    ratio_values: list[float] | None
    """the ratio's weights (None for a base model)"""
    ranks: str
    """the components' ranks, "8:32:8" ("" without components)"""
    trainable_params: int
    """trainable parameters allocated (0 for a base model)"""
    seed: int | None
    """the training seed"""
    accuracy: float
    """VQA accuracy in % on the eval set"""
    per_answer_type: dict[str, float]
    """{answer type: accuracy %}"""
    train_time_s: float | None
    peak_memory_bytes: int | None
    eval_time_s: float | None
    created: str | None
    """when the evaluation was made (ISO time)"""
    settings: dict
    """verdict.run_settings of the run: what must match for runs to pool as seeds ({} for a base model)"""
    snapshot: bool
    """a halving rung's snapshot, trained to a step short of its schedule (toolkit.study.rung)"""
