"""What the tests share besides fixtures (fixtures live in the conftest.py of the folder that uses them; the shared
ones in tests/conftest.py). No test module imports another test module: they import these.

    tiny.py              tiny configs of every supported VLM family, real tiny models and their inputs
    tiny_checkpoints.py  tiny real checkpoints (weights, processor files) of every family, built on first use
    jobscript.py         a stand-in `train` job script for the job-system tests; `PATIENCE`, `wait_for`, `job_steps`
    jobs.py              `Env` (temporary workspaces, the workers a test starts), a demo sweep spec, store probes
    adapters.py          evaluated adapter folders written without training, for the comparison tests
    faults.py            a real trained adapter and damaged copies of files, for the fault and bad-input tests
    hub_server.py        a local Hub-compatible HTTP server (the `hub` fixture)
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""the repository root (app.py, app_pages/, toolkit/)"""
