"""Fixtures every test folder shares (each folder's conftest.py holds its own); helpers live in tests/helpers/.

    tiny_dirs       family or variant -> folder with its tiny config.json (session)
    checkpoints     key -> tiny real checkpoint folder, built on first use (session)
    env             temporary jobs/ and adapters/ workspaces, the worker processes a test starts (tests.helpers.jobs.Env)
    demo_structure  the demo model's structure (session)
    run_cli         `run("jobs", "list")` -> (exit code, stdout, stderr), in-process
    hub             a local Hub-compatible server, HF_ENDPOINT pointing at it (tests/helpers/hub_server.py)

The fast target (`make test-fast`) passes `--unmarked-limit 10`: a test without a `slow`, `training`, `browser`,
`slurm` or `gpu` marker whose call takes longer than that fails, naming itself and its time (mark it, or make it
faster). The limit is a quiet machine's: it stretches by the 1-minute load per core when that is above 1.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.tiny import MODELS, tiny_model_dir

MARKED_SLOW = ("slow", "training", "browser", "slurm", "gpu")
"""markers that keep a test out of the fast target, so it may take as long as it needs"""


SERIAL_GROUPS = ("slurm", "browser")
"""markers whose tests share one outside resource (the test Slurm cluster's two fake GPUs; a browser and an app
server at full tilt): under pytest-xdist (`make test` runs two processes) each group runs in one process, in turn.
Tests that use a module-scoped fixture are grouped by module the same way (one process builds the fixture), and a
module can name its own group (`pytestmark = pytest.mark.xdist_group(...)`) for state it caches itself."""


def pytest_configure(config):
    planned = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not (isinstance(planned, int) and planned > 1):  # a process that collects
        gc.disable()  # while collection imports torch, transformers, peft...: see pytest_collection_finish
    # under pytest-xdist the cores are shared by the worker processes: torch's intra-op threads are split between
    # them, or two processes with one thread per core each would thrash
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    # numpy's OpenBLAS likewise: its threads spin after each call, and with two processes each spinning a thread
    # per core a small matrix product took 2-3x the CPU time (and wall time on a busy machine). OpenBLAS reads the
    # setting when numpy is imported, so the controller sets it for the worker processes before it starts them.
    if not hasattr(config, "workerinput") and isinstance(planned, int) and planned > 1:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // planned)))


def pytest_unconfigure(config):
    # A process that imported torch, transformers and peft spends 3-6 s exiting, in the cyclic garbage collector's
    # passes over every module it finalizes, after its last test (pytest-xdist's controller waits for each worker).
    # Frozen, the heap is left to the OS: atexit handlers and weakref finalizers still run, as does __del__ of
    # whatever refcounting frees; only cyclic garbage left at exit is not collected (Python never promised that).
    atexit.register(gc.freeze)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group markers (in each worker)
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = next((g for g in SERIAL_GROUPS if item.get_closest_marker(g)), None)
        if group is None and item.get_closest_marker("xdist_group") is None and _uses_a_module_fixture(item):
            # a module-scoped fixture (a trained adapter, a built model) is built once per process that runs one of
            # its tests: its tests stay in one process rather than each of them paying for it
            group = item.module.__name__
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker sends the collected ids to the scheduler
def pytest_collection_finish(session):
    if "streamlit" in sys.modules:  # a collected module uses AppTest (every process of a whole run collects one)
        _scan_streamlit_components_once()
    # The garbage collector took 15-25% of a test process's CPU time: collection imports torch, transformers,
    # peft, streamlit, pandas..., a million objects that live as long as the process, and every full collection
    # walked them again (~1 s each; 2-3 s during collection alone, which leaves ~30k objects of garbage). So the
    # collector is off while collection imports (pytest_configure), and then they are frozen: left out of every
    # collection. The tests allocate so much that the youngest generation's default threshold (700) collected
    # thousands of times a run: 20,000.
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    gc.enable()
    # pytest-xdist (3.8) groups a test by a "@group" suffix it writes to item._nodeid; pytest 9.2 derives the nodeid
    # from item._id instead, so without this the suffix was lost and --dist loadgroup grouped nothing
    for item in session.items:
        grouped = getattr(item, "_nodeid", None)
        if isinstance(grouped, str) and grouped != item.nodeid:
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(grouped)


def _scan_streamlit_components_once() -> None:
    """Every AppTest scans the metadata of every installed package for Streamlit components (~0.3-0.5 s of CPU,
    more than the calculator page's own run): the installed packages do not change during a session, so the first
    scan's result serves every AppTest of this process. The app registers the very same (no) components."""
    from streamlit.components.v2 import manifest_scanner

    scan = manifest_scanner.scan_component_manifests
    if getattr(scan, "cached_for_tests", False):
        return
    first = functools.cache(scan)

    @functools.wraps(scan)
    def scan_once(max_workers=None):
        return list(first())

    scan_once.cached_for_tests = True
    manifest_scanner.scan_component_manifests = scan_once


def _uses_a_module_fixture(item) -> bool:
    """Whether `item` asks for a module-scoped fixture (autouse ones, settings rather than things built, aside)."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(defs and defs[-1].scope == "module" and not getattr(defs[-1], "_autouse", False)
                                    for defs in info.name2fixturedefs.values())


def pytest_addoption(parser):
    parser.addoption("--unmarked-limit", type=float, default=None, metavar="S",
                     help=f"fail any test without a {'/'.join(MARKED_SLOW)} marker whose call takes more than S seconds")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    limit = item.config.getoption("--unmarked-limit")
    if (limit is None or report.when != "call" or not report.passed
            or any(item.get_closest_marker(m) for m in MARKED_SLOW)):
        return
    # the limit is a quiet machine's: on a machine busier than its cores (others' jobs, a training run) it stretches
    # by the load, so a fast test is not failed for sharing the CPU
    busy = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    if call.duration > limit * busy:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} took {call.duration:.1f} s without a {'/'.join(MARKED_SLOW)} marker "
                           f"(the fast target's limit is {limit:g} s on a quiet machine, {limit * busy:.0f} s at this "
                           f"load): mark it (@pytest.mark.slow, or training if it trains) or make it faster")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """key -> tiny real checkpoint folder (tests/helpers/tiny_checkpoints.py), built on first use, shared by the session."""
    from tests.helpers.tiny_checkpoints import build_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    built: dict[str, Path] = {}

    def get(key: str) -> Path:
        if key not in built:
            built[key] = build_checkpoint(key, root / key.replace("+", "-"))
        return built[key]

    return get


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """family or variant -> folder with its tiny config.json, written once per session (treat as read-only)."""
    return {key: tiny_model_dir(tmp_path_factory, key) for key in MODELS}


@pytest.fixture
def env(tmp_path, monkeypatch):
    from tests.helpers.jobs import Env  # imports the toolkit's job system: not at start-up (pytest-xdist's controller)

    e = Env(tmp_path)
    monkeypatch.setenv("CMBA_JOBS_DIR", str(e.jobs))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(e.adapters))
    yield e
    e.cleanup()
    if (e.jobs / "jobs.db").exists():
        assert e.store.integrity_check() == "ok"





@pytest.fixture
def run_cli(monkeypatch, capsys):
    from toolkit import cli

    def run(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture(scope="session")
def demo_structure():
    from toolkit.calculator.structure import load_structure

    return load_structure("demo")


@pytest.fixture
def hub(tmp_path_factory, monkeypatch):
    """A running local Hub-compatible server (tests/helpers/hub_server.py) with user "alice", a write and a read token."""
    from tests.helpers.hub_server import serve_hub

    yield from serve_hub(tmp_path_factory, monkeypatch)
