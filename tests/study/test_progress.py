"""A job's progress as the jobs page and `jobs list` show it (toolkit.study.progress): the phase of a halving rung's
step, and a rung job's step counted against its rung, not the full schedule."""

from toolkit import runs
from toolkit.queue.executor import PYTHON
from toolkit.queue.store import JobStore, NewJob
from toolkit.study.progress import job_progress, step_name


def test_phase_names_of_toolkit_steps():
    assert step_name((PYTHON, "-m", "toolkit", "evaluate", "--adapter", "x")) == "evaluate"
    assert step_name((PYTHON, "-m", "toolkit.training.distributed", "--nproc", "2", "--", "-m", "toolkit",
                      "train")) == "train"
    assert step_name((PYTHON, "-m", "toolkit.study.rung", "--until", "10")) == "train"  # was "-m"
    assert step_name(("sbatch", "x.sh")) == "sbatch"


def test_a_rung_job_counts_its_steps_against_its_rung(tmp_path):
    store = JobStore(tmp_path / "jobs")
    out = tmp_path / "run"
    job = store.submit(NewJob(name="rung", steps=[[PYTHON, "-m", "toolkit.study.rung"]], output_dir=str(out),
                              meta={"rung": 1, "until": 10}))
    out.mkdir()
    runs.append_metric(out, runs.MetricLine(step=5, max_steps=20, loss=1.0))
    p = job_progress(store.get(job.id))
    assert (p["step"], p["max_steps"], p["fraction"]) == (5, 10, 0.5)
