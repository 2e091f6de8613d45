"""What a run took on this machine (`RunRecord`), and the job store's file of probe measurements.

    append_probe(probe.to_dict(), JobStore().folder)   # one line of <jobs>/measured.jsonl (toolkit.study.probe)
    saved_probes(JobStore().folder)                    # -> [RunRecord(source="probe"), ...]

A RunRecord is what estimates are made from (toolkit.study.estimate): a finished job's or adapter's rates, or a
probe's (a few steps of a sweep's first job, run here before queueing). This module owns `measured.jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

FILE = "measured.jsonl"
"""in the job store's folder: one probe a line"""


@dataclass(frozen=True)
class RunRecord:
    """What one finished job took here."""

    model: str
    gpu: bool
    """trained on a GPU (else the CPU)"""
    s_per_sample: float | None = None
    """training seconds per sample (train time / (steps x batch size)); None for an evaluation-only job"""
    s_per_question: float | None = None
    """evaluation seconds per question"""
    overhead_s: float | None = None
    """wall time less training and evaluation: loading the model, the data, saving"""
    source: str = "run"
    """run (a finished job or adapter) | probe (toolkit.study.probe: a few steps measured before queueing)"""


def append_probe(doc: dict, folder: str | Path) -> Path:
    """Append one probe (a RunRecord's fields and what the probe ran) to `folder`'s measured.jsonl (one line, flushed)."""
    path = Path(folder) / FILE
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(doc, sort_keys=True) + "\n")
    return path


def saved_probes(folder: str | Path) -> list[RunRecord]:
    """The RunRecords of the probes saved in `folder` (lines that do not read as one are skipped)."""
    path = Path(folder) / FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    names = {f.name for f in dataclasses.fields(RunRecord)}
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
            record = RunRecord(**{**{k: v for k, v in doc.items() if k in names}, "source": "probe"})
        except (ValueError, TypeError):
            continue
        if isinstance(record.model, str) and isinstance(record.s_per_sample, int | float) and record.s_per_sample > 0:
            out.append(record)
    return out
