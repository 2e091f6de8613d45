"""The comparison row (toolkit.evaluation.rows.ComparisonRow): what `compare.scan` builds is exactly what the
TypedDict declares, for an adapter's row, a halving snapshot's and a base model's."""

import json

from tests.helpers.adapters import pattern, write_adapter
from toolkit.evaluation import compare
from toolkit.evaluation.rows import ComparisonRow


def test_every_key_of_a_row_is_declared_and_every_declared_key_is_written(tmp_path):
    write_adapter(tmp_path, "r1-4-1-s0", ratio=(1, 4, 1), seed=0, accs=pattern(200))
    snapshot = write_adapter(tmp_path, "r1-1-1-s0-step5", seed=0, accs=pattern(190), training={"max_steps": 5})
    doc = json.loads((snapshot / "cmba.json").read_text())
    doc["result"].update(steps=5, schedule_steps=10, snapshot_of=str(tmp_path / "r1-1-1-s0"))
    (snapshot / "cmba.json").write_text(json.dumps(doc))
    write_adapter(tmp_path, "base--demo", kind="base", accs=pattern(150))
    store = compare.scan(tmp_path)
    assert not store.unreadable and len(store.rows) == 3
    declared = set(ComparisonRow.__annotations__)
    for row in store.rows:
        assert set(row) == declared, f"{row['name']}: undeclared {set(row) - declared}, unwritten {declared - set(row)}"
    by_name = {r["name"]: r for r in store.rows}
    assert by_name["r1-1-1-s0-step5"]["snapshot"] and not by_name["r1-4-1-s0"]["snapshot"]
    assert by_name["base--demo"]["ratio"] == "base" and by_name["base--demo"]["settings"] == {}
    assert by_name["r1-4-1-s0"]["ratio"] == "1:4:1" and by_name["r1-4-1-s0"]["ranks"] == "8:8:8"
