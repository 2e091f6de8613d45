"""`sweep`'s options are settings fields (toolkit/study/settings.py), as `train`'s are: every flag of its --help is
generated from a field (name, aliases, doc, default), SweepSpec and the launch form take the fields' defaults and
bounds, and a sweep's id (the hash queued jobs are found by) is what it was before the options became fields."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from toolkit import cli
from toolkit.cli.flags import help_text
from toolkit.cli.sweep import COMMAND_FLAGS, REFUSED, RESUME, spec_from_args
from toolkit.errors import InputError
from toolkit.fields import settings_field, settings_fields
from toolkit.study import sweep as sw
from toolkit.study.settings import SweepSettings
from toolkit.training.settings import TrainSettings

BASE = ["sweep", "--model", "demo", "--dataset", "synthetic:shapes"]


def _sweep_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli.make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["sweep"]


def test_every_sweep_flag_comes_from_a_settings_field():
    """Each option but the command's own switches is a field's flag (and aliases) with the field's help line:
    the sweep's own options SweepSettings', the shared ones TrainSettings'; --resume and the refused `train`
    options are TrainSettings' flags whose help says what a sweep does with them."""
    own = {f.name: f for f in settings_fields(SweepSettings)}
    train = {f.name: f for f in settings_fields(TrainSettings)}
    seen = set()
    for action in _sweep_parser()._actions:
        if action.dest == "help" or action.option_strings[0] in COMMAND_FLAGS:
            assert set(action.option_strings) <= {"-h", "--help", *COMMAND_FLAGS}
            continue
        f = own.get(action.dest) or train[action.dest]
        assert tuple(action.option_strings) == (f.flag, *f.aliases), action.dest
        expected = (RESUME if f.name == "resume" else f"not in a sweep: {REFUSED[f.name]}" if f.name in REFUSED
                    else help_text(f))
        assert action.help == expected.replace("%", "%%") and action.default is None, action.dest
        seen.add(f.name)
    assert set(own) <= seen  # every option of the sweep has its flag
    assert set(train) - seen == {"ratio", "seed"}  # train's too: shared, an axis, refused; these two are aliases
    assert {"--ratio", "--seed"} == {settings_field(TrainSettings, n).flag for n in ("ratio", "seed")}
    assert own["ratios"].aliases == ("--ratio",) and own["seed_list"].aliases == ("--seed",)


def test_aliases_and_the_exclusive_budget_flags(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    args = cli.make_parser().parse_args([*BASE, "--ratio", "1:4:1", "--seed", "3", "--budget-rank", "8"])
    assert (args.ratios, args.seed_list) == ("1:4:1", "3")
    code = cli.main([*BASE, "--ratios", "1:1:1", "--budget-rank", "8", "--budget-percent", "1", "--dry-run"])
    assert code == 2 and capsys.readouterr().err == ("error: budget-rank: give either --budget-rank or "
                                                     "--budget-percent, not both\n")
    assert {f.exclusive for f in settings_fields(SweepSettings) if f.name.startswith("budget_")} == {"budget"}


def test_the_spec_takes_its_defaults_and_bounds_from_the_fields():
    field = {f.name: f for f in settings_fields(SweepSettings)}
    d = {k: v.default for k, v in sw.SweepSpec.__dataclass_fields__.items()}
    assert d["seeds"] == tuple(range(field["seeds"].default)) and d["eval_split"] == field["eval_split"].default
    assert (d["max_attempts"], d["executor"], d["reference"], d["pack"]) == tuple(
        field[k].default for k in ("max_attempts", "executor", "reference", "pack"))
    assert sw.MAX_SEEDS == field["seeds"].upper and sw.EVAL_SPLIT == field["eval_split"].default
    assert f"up to {field['pack_size'].upper:g}" in field["pack_size"].doc  # the help says the bound it has
    common = dict(model="demo", dataset="synthetic:shapes", ratios="1:1:1", budget_kind="rank", budgets="8",
                  gpus_per_job=0)
    for name, value, message in (
            ("seeds", field["seeds"].upper + 1, f"seeds: at most {field['seeds'].upper} seeds per sweep"),
            ("max_attempts", field["max_attempts"].upper + 1, f"max attempts: must be a whole number in "
                                                              f"{field['max_attempts'].lower}..{field['max_attempts'].upper}"),
            ("retrieval", field["retrieval"].upper + 1, f"retrieval: the number of image-caption pairs must be in "
                                                        f"{field['retrieval'].lower}..{field['retrieval'].upper}"),
            ("pack_size", field["pack_size"].upper + 1, f"pack size: must be a whole number in 1..{field['pack_size'].upper}"),
            ("eval_limit", field["eval_limit"].upper + 1, "eval limit: must be <= 1,000,000")):
        with pytest.raises(InputError, match="^" + message):
            sw.SweepSpec.build(**common, **{name: value}, **({"pack": True} if name == "pack_size" else {}))
        sw.SweepSpec.build(**common, **{name: field[name].upper}, **({"pack": True} if name == "pack_size" else {}))
    with pytest.raises(InputError, match=r"^eta: must be a number > 1, got 1$"):
        sw.SweepSpec.from_options({"ratios": "1:1:1", "budget_rank": "8", "search": "halving", "eta": "1",
                                   "gpus_per_job": "0"}, train={"model": "demo", "dataset": "synthetic:shapes",
                                                                "max_steps": "40"})


# pinned before the options became fields: the same input must keep finding the sweep queued before
IDS = {
    "plain": (["--ratios", "1:4:1,1:1:1", "--budget-rank", "8", "--gpus-per-job", "0"], "b3e78e9cf009ca90"),
    "lists": (["--ratio", "2:4:1,1:1:1", "--seeds", "3", "--budget-params", "20M,10M", "--max-steps", "200", "--lr",
               "5e-3", "--eval-split", "test", "--eval-limit", "50", "--gpus-per-job", "0", "--max-attempts", "5",
               "--no-reference", "--name", "mine"], "6ad21b1999c776ff"),
    "seed-list": (["--ratios", "1:1:1", "--seed", "4,2", "--budget-percent", "0.3", "--no-eval", "--gpus-per-job", "0"],
                  "8a873d366c1cf492"),
    "design": (["--design", "simplex-lattice:3", "--search", "halving", "--max-steps", "40", "--rungs", "10,20,40",
                "--eta", "3", "--report-split", "validation", "--controls", "--budget-rank", "8", "--gpus-per-job", "0",
                "--pack", "--pack-size", "20", "--retrieval", "8"], "6fc000d077ca6053"),
    "no-confirm": (["--ratios", "1:1:1,1:4:1", "--search", "halving", "--max-steps", "40", "--no-confirm",
                    "--budget-rank", "4", "--gpus-per-job", "0", "--retrieval", "8", "--retrieval-dataset",
                    "synthetic:shapes?n=10"], "396fee3c1d423936"),
}


@pytest.mark.parametrize("argv, sweep_id", IDS.values(), ids=IDS)
def test_a_sweeps_id_is_what_it_was(argv, sweep_id, tmp_path, monkeypatch):
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    assert spec_from_args(cli.make_parser().parse_args([*BASE, *argv])).sweep_id == sweep_id


def test_a_built_sweeps_id_is_what_it_was():
    spec = sw.SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios="1:1:1,1:4:1", seeds=3,
                              budget_kind="rank", budgets="8", train={"max_steps": 200, "lr": "5e-3"}, gpus_per_job=0)
    assert spec.sweep_id == "4cafc56e64f799f5"
    form = sw.SweepSpec.build(model="demo", dataset="synthetic:shapes", ratios=["1:1:1"], seeds=2, budget_kind="rank",
                              budgets="8", train={"max_steps": 300, "batch_size": 16, "lr": "2e-3"}, gpus_per_job=0,
                              eval_limit=400, design="simplex-centroid", pack=True,
                              search={"kind": "halving", "rungs": [75, 150, 300], "controls": True})
    assert form.sweep_id == "d038f0004a1069d8"


def test_the_launch_forms_bounds_and_docs_are_the_fields(env, demo_structure, monkeypatch, tmp_path):  # noqa: ARG001
    """env: the workspaces; demo_structure: torch and the demo model loaded before the call (its import is slow)."""
    from streamlit.testing.v1 import AppTest

    from app_pages.settings_ui import number_bounds
    from tests.helpers.jobscript import PATIENCE
    from toolkit.study.search import Search

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    page = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app_pages" / "jobs.py"), default_timeout=PATIENCE)
    page.session_state["launch"] = {"model": "demo", "budget_kind": "rank", "budget_value": "8", "ratio": "1:4:1"}
    page.session_state["jobs_designed"] = True
    page.run()
    assert not page.exception
    field = {f.name: f for f in settings_fields(SweepSettings)}
    seeds, limit = page.number_input(key="jobs_seeds"), page.number_input(key="jobs_eval_limit")
    assert (seeds.min, seeds.max) == number_bounds(field["seeds"]) and seeds.help.startswith(field["seeds"].doc)
    assert limit.max == field["eval_limit"].upper and limit.help == field["eval_limit"].doc
    assert page.text_input(key="jobs_eval_split").value == field["eval_split"].default
    assert page.checkbox(key="jobs_eval").value is field["evaluate"].default
    assert page.checkbox(key="jobs_pack").help.startswith(field["pack"].doc)
    assert page.text_input(key="jobs_design").help == field["design"].doc
    assert page.checkbox(key="jobs_halving").help == field["search"].doc
    steps = int(page.number_input(key="jobs_steps").value)
    rungs = page.text_input(key="jobs_rungs")
    assert rungs.help == field["rungs"].doc
    assert rungs.value == ",".join(map(str, Search.parse("halving", max_steps=steps, eta=field["eta"].default).rungs))
    assert settings_field(SweepSettings, "eta").default == Search.eta  # the search's own default, named once
