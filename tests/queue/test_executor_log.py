"""The log's step line (toolkit.queue.executor.shown_step): readable when a step carries its settings as JSON."""

import json

from toolkit.queue.executor import LONG_ARG, PYTHON, shown_step


def test_a_long_settings_argument_is_cut_in_the_log_line_and_short_ones_are_kept():
    blob = json.dumps({f"field_{i}": i for i in range(120)})
    line = shown_step((PYTHON, "-m", "toolkit", "train", "--settings-json", blob))
    assert line.startswith("python -m toolkit train --settings-json {")
    assert len(line) < 200 and f"<{len(blob):,} characters" in line and "jobs show" in line
    short = (PYTHON, "-m", "toolkit", "evaluate", "--adapter", "x" * LONG_ARG)
    assert shown_step(short) == "python -m toolkit evaluate --adapter " + "x" * LONG_ARG
