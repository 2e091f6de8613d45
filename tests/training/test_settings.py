"""One settings dataclass per concept (toolkit/training/settings.py) and the flags derived from it.

Fast checks of the dataclasses, the CLI derived from them and the job store's settings column, then two real
runs through the worker: a sweep of a local model folder with --patterns on a custom JSONL dataset, and a job
queued in the old argv form."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.jobs import rows_written
from toolkit import cli
from toolkit.calculator.settings import AllocateSettings
from toolkit.errors import InputError
from toolkit.fields import settings_fields
from toolkit.queue.executor import PYTHON
from toolkit.queue.states import JobState
from toolkit.queue.store import SCHEMA_VERSION, JobStore, NewJob
from toolkit.study.sweep import SweepSpec, plan_sweep
from toolkit.training.settings import EvalSettings, TrainSettings, check_allocation, lora_sha256

BASE = {"model": "demo", "dataset": "synthetic:shapes", "ratio": "1:4:1", "budget_rank": 8}


def _options(command: str) -> set[str]:
    sub = next(a for a in cli.make_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return {o for o in sub.choices[command]._option_string_actions if o not in ("-h", "--help")}


@pytest.mark.parametrize("cls", [TrainSettings, EvalSettings, AllocateSettings])
def test_every_field_is_documented_and_typed(cls):
    for f in settings_fields(cls):
        assert f.doc, f"{cls.__name__}.{f.name} has no doc string"
        assert f.kind in ("int", "float", "str", "bool", "choice", "value"), f"{cls.__name__}.{f.name} is {f.kind}"
        assert f.section, f"{cls.__name__}.{f.name} belongs to no group"


def test_every_sweep_field_is_documented():
    import ast
    import inspect

    body = ast.parse(inspect.getsource(SweepSpec)).body[0].body
    names = [n.target.id for n in body if isinstance(n, ast.AnnAssign)]
    documented = {n.target.id for n, after in zip(body, body[1:]) if isinstance(n, ast.AnnAssign)
                  and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)}
    assert names and set(names) <= documented


def test_text_is_converted_and_round_trips_through_json():
    s = TrainSettings(**BASE, max_steps="200", lr="5e-3", lr_projector="1e-3", columns="question=q",
                      targets="language=attention", audit=None, sample_seed="2")
    assert (s.max_steps, s.lr, s.sample_seed, s.columns) == (200, 0.005, 2, {"question": "q"})
    assert s.spec.ratio.as_tuple() == (1.0, 4.0, 1.0) and s.spec.targets.language == "attention"
    assert s.learning_rate == 0.005 and s.component_lr == {"projector": 0.001}
    assert TrainSettings.from_json(s.to_json()) == s and TrainSettings.from_dict(s.to_dict()) == s
    assert s.hyperparameters()["component_lr"] == {"projector": 0.001}  # what cmba.json and the fingerprint record
    audit = TrainSettings(model="demo", dataset="synthetic:shapes", audit="4:16:4")
    assert audit.audit_ranks == (4, 16, 4) and audit.spec is None
    assert TrainSettings.from_json(audit.to_json()).audit == (4, 16, 4)


@pytest.mark.parametrize("change, message", [
    ({"lr": 1.5}, r"^lr: must be a learning rate in \(0, 1\), got 1.5$"),
    ({"lr_vision": "x"}, r"^lr-vision: 'x' is not a number"),
    ({"batch_size": 0}, r"^batch-size: must be a whole number in \[1, 65536\], got 0$"),
    ({"warmup_ratio": 1}, r"^warmup-ratio: must be in \[0, 1\), got 1"),
    ({"precision": "half"}, r"^precision: 'half' is not one of auto, fp32, bf16, fp16$"),
    ({"quantize": "8bit"}, r"^quantize: '8bit' is not supported \(allowed: 4bit\)$"),
    ({"max_steps": 3, "epochs": 1}, r"^max-steps: give either --max-steps or --epochs, not both$"),
    ({"budget_params": 1000}, r"^budget-rank: give either --budget-rank or --budget-params"),
    ({"ratio": None}, r"^ratio: required"),
    ({"budget_rank": None}, r"^budget: give one of"),
    ({"model": " "}, r"^model: required"),
    ({"mode": "both"}, r"^mode: 'both' is not one of rank, share$"),
    ({"patterns": "vision=x"}, r"^patterns: missing projector, language"),
    ({"progress": "maybe"}, r"^progress: must be true or false"),
])
def test_bad_values_name_the_flag(change, message):
    with pytest.raises(InputError, match=message):
        TrainSettings(**{**BASE, **change})


def test_unknown_json_fields_and_bad_eval_settings():
    with pytest.raises(InputError, match=r"settings: unknown field 'learning_rate'"):
        TrainSettings.from_dict({**BASE, "learning_rate": 0.1})
    with pytest.raises(InputError, match=r"settings-json: not valid JSON"):
        TrainSettings.from_json("{nope")
    with pytest.raises(InputError, match=r"^adapter: give --adapter DIR"):
        EvalSettings(dataset="synthetic:shapes")
    with pytest.raises(InputError, match=r"^max-new-tokens: must be a whole number in \[1, 512\], got 0$"):
        EvalSettings(base="demo", dataset="synthetic:shapes", max_new_tokens=0)
    assert EvalSettings(base="demo", dataset="d").split == "validation" and TrainSettings(**BASE).split == "train"


def test_flags_are_derived_from_the_fields():
    train, sweep, evaluate = _options("train"), _options("sweep"), _options("evaluate")
    assert {"--patterns", "--columns", "--image-dir", "--revision", "--lora-dropout", "--warmup-ratio",
            "--weight-decay", "--sample-seed", "--max-grad-norm", "--settings-json"} <= train
    assert train - sweep == {"--settings-json"}  # a sweep offers every option `train` has
    assert {"--adapter", "--base", "--columns", "--image-dir", "--sample-seed", "--max-new-tokens"} <= evaluate
    argv = ["train", "--model", "demo", "--dataset", "synthetic:shapes", "--ratio", "1:4:1", "--budget-rank", "8",
            "--lr", "1e-3", "--lr-language", "2e-3", "--patterns", "vision=a;projector=b;language=c", "--no-progress"]
    from toolkit.cli.train import settings_from_args

    s = settings_from_args(cli.make_parser().parse_args(argv))
    assert (s.lr, s.lr_language, s.patterns, s.progress) == (1e-3, 2e-3, "vision=a;projector=b;language=c", False)
    assert (s.batch_size, s.max_steps) == (16, 300)  # the demo's defaults (model_defaults), as the app's form has them
    again = settings_from_args(cli.make_parser().parse_args(["train", "--settings-json", s.to_json(), "--seed", "3"]))
    assert again.seed == 3 and TrainSettings.from_dict({**again.to_dict(), "seed": 0}) == s  # flags override the JSON


def test_lr_is_refused_identically_by_train_and_by_sweep_before_queueing(env, capsys):  # noqa: F811
    common = ["--model", "demo", "--dataset", "synthetic:shapes", "--budget-rank", "8", "--lr", "1.5"]
    assert cli.main(["train", *common, "--ratio", "1:1:1"]) == 2
    train_err = capsys.readouterr().err
    assert cli.main(["sweep", *common, "--ratios", "1:1:1,1:4:1", "--gpus-per-job", "0", "--no-worker"]) == 2
    assert capsys.readouterr().err == train_err == "error: lr: must be a learning rate in (0, 1), got 1.5\n"
    assert rows_written(env.jobs) == 0
    assert cli.main(["sweep", *common[:-2], "--ratios", "1:1:1", "--audit", "4:4:4", "--no-worker"]) == 2
    assert capsys.readouterr().err.startswith("error: audit: a sweep solves each ratio's allocation")


def test_train_refuses_an_allocation_other_than_the_planned_one(env, capsys, tmp_path):  # noqa: F811
    plan = plan_sweep(SweepSpec.build(model="demo", dataset="synthetic:shapes?n=16", ratios="1:4:1", budget_kind="rank",
                                      budgets="4", train={"max_steps": 2}, evaluate=False, gpus_per_job=0))
    [job] = plan.jobs
    settings = TrainSettings.from_dict(job.settings["train"])
    assert job.lora_sha256 == settings.expect_lora_sha256 == lora_sha256(settings.allocation())
    check_allocation(settings)  # the planned allocation is the one recomputed
    out = tmp_path / "refused"
    bad = {**settings.to_dict(), "expect_lora_sha256": "0" * 64, "output": str(out)}
    assert cli.main(["train", "--settings-json", json.dumps(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: expect-lora-sha256: the allocation computed now") and err.count("\n") == 1
    assert not out.exists()


def test_store_keeps_settings_as_data_and_migrates_old_rows(tmp_path):
    store = JobStore(tmp_path)
    old = store.submit(NewJob(name="before", steps=[["true"]]))
    db = sqlite3.connect(tmp_path / "jobs.db")  # back to version 2: no settings column
    db.execute("ALTER TABLE jobs DROP COLUMN settings")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = JobStore(tmp_path)
    assert store.get(old.id).settings == {} and store.get(old.id).steps == (("true",),)
    doc = {"train": TrainSettings(**BASE).to_dict(), "evaluate": None}
    new = store.submit(NewJob(name="after", steps=[["true"]], settings=doc))
    assert store.get(new.id).settings == doc and store.get(new.id).to_dict()["settings"] == doc
    with pytest.raises(InputError, match="settings: must be a JSON object"):
        NewJob(name="x", steps=[["true"]], settings="--lr 1")
    db = sqlite3.connect(tmp_path / "jobs.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


# --------------------------------------------------------------------------- real runs through the worker

def _jsonl(folder, split: str, n: int, seed: int) -> None:
    """A VQA split in custom column names (qid, picture, text, answers) with PNGs in folder/images."""
    from toolkit.data.sources import load_vqa

    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / f"{split}.jsonl", "w") as fh:
        for i, r in enumerate(load_vqa(f"synthetic:shapes?n={n}&seed={seed}", split=split)):
            r.image.save(folder / "images" / f"{split}-{i}.png")
            fh.write(json.dumps({"qid": f"{split}-{i}", "picture": f"{split}-{i}.png", "text": r.question,
                                 "answers": r.answers}) + "\n")


@pytest.mark.training  # a real sweep: two trainings and evaluations through a worker (about 50 s)
def test_sweep_of_a_local_model_with_patterns_on_a_custom_jsonl_dataset(env, tmp_path):  # noqa: F811
    from toolkit.training.demo import demo_model_dir

    model = tmp_path / "my-vlm"
    shutil.copytree(demo_model_dir(), model)  # a local folder with config.json and weights, not the preset
    data = tmp_path / "vqa"
    _jsonl(data, "train", 16, 1)
    _jsonl(data, "validation", 8, 2)
    r = subprocess.run([sys.executable, "-m", "toolkit", "sweep", "--model", str(model), "--dataset", str(data),
                        "--patterns", "vision=model.vision_tower;projector=model.multi_modal_projector;"
                                      "language=model.language_model",
                        "--columns", "question_id=qid,image=picture,question=text", "--image-dir", str(data / "images"),
                        "--ratios", "1:4:1", "--budget-rank", "4", "--max-steps", "3", "--batch-size", "4",
                        "--lora-dropout", "0.1", "--warmup-ratio", "0", "--weight-decay", "0.01", "--sample-seed", "1",
                        "--eval-limit", "8", "--gpus-per-job", "0", "--no-worker", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    planned, reference = json.loads(r.stdout)["jobs"]
    assert planned["kind"] == "train" and reference["kind"] == "reference"  # every sweep has its base-model row
    job = env.store.get(planned["job"])
    assert job.settings["train"]["patterns"].startswith("vision=model.vision_tower")
    assert job.settings["evaluate"]["columns"] == {"question_id": "qid", "image": "picture", "question": "text"}
    assert env.worker("--threads", "1", "--once").wait(timeout=500) == 0
    job = env.store.get(job.id)
    assert job.state is JobState.SUCCEEDED, (job.message, open(job.log_path).read()[-2000:])
    cmba = json.loads(open(f"{job.output_dir}/cmba.json").read())
    assert cmba["base_model"]["id"] == str(model) and cmba["dataset"]["columns"]["question"] == "text"
    assert cmba["training"]["lora_dropout"] == 0.1 and cmba["training"]["weight_decay"] == 0.01
    assert list(cmba["allocation"]["ratio"]) == [1, 4, 1] and cmba["allocation"]["total"] == planned["trainable params"]
    [results] = [p for p in (tmp_path / "adapters").glob("*/eval/*/results.json") if "base--" not in str(p)]
    assert json.loads(results.read_text())["scores"]["n"] == 8
    ref = env.store.get(reference["job"])
    if ref.state is not JobState.SUCCEEDED:  # --once may stop after the first job: run the reference too
        assert env.worker("--threads", "1", "--once").wait(timeout=500) == 0
        ref = env.store.get(reference["job"])
    assert ref.state is JobState.SUCCEEDED, (ref.message, open(ref.log_path).read()[-2000:])
    [base] = list((tmp_path / "adapters").glob("base--*/eval/*/results.json"))
    assert json.loads(base.read_text())["adapter"] is None and json.loads(base.read_text())["scores"]["n"] == 8


@pytest.mark.training  # a worker runs a real 2-step `train`
def test_a_job_queued_in_the_old_argv_form_still_runs(env, tmp_path):  # noqa: F811
    out = tmp_path / "legacy"
    old = [PYTHON, "-m", "toolkit", "train", "--model", "demo", "--dataset", "synthetic:shapes?n=16", "--ratio",
           "1:4:1", "--mode", "rank", "--budget-rank", "4", "--alpha-rule", "scaled", "--alpha", "2", "--seed", "0",
           "--max-steps", "2", "--batch-size", "4", "--lr", "0.002", "--output", str(out), "--resume"]
    job = env.store.submit(NewJob(name="legacy", steps=[old], output_dir=str(out)))
    assert job.settings == {}
    assert env.worker("--threads", "1", "--once").wait(timeout=300) == 0
    job = env.store.get(job.id)
    assert job.state is JobState.SUCCEEDED, job.message
    assert json.loads((out / "cmba.json").read_text())["training"]["learning_rate"] == 0.002


def test_one_source_of_defaults_for_the_cli_and_the_app(capsys):
    from toolkit.study.sweep import suggested_settings
    from toolkit.training.settings import model_defaults

    # `train` without --lr and the app's launch form start from the same learning rate, per model
    for model in ("demo", "llava-1.5-7b"):
        s = TrainSettings(**{**BASE, "model": model})
        assert s.lr == model_defaults(model)["lr"] == float(suggested_settings(model)["lr"])
        assert "lr" not in s.changed()  # the model's default is not a change: sweep ids do not depend on it
    assert TrainSettings(**BASE).lr == 2e-3 and TrainSettings(**{**BASE, "model": "qwen2-vl-2b"}).lr == 2e-4
    assert TrainSettings(**BASE, lr="1e-3").changed()["lr"] == 1e-3
    with pytest.raises(SystemExit):  # every help text renders (a '%' in a doc string once broke `train --help`)
        cli.main(["train", "--help"])
    assert "learning rate (default: 2e-3 for the demo models" in " ".join(capsys.readouterr().out.split())


def test_model_defaults_resolve_once_in_the_settings():
    """`train --model demo` without --batch-size/--max-steps runs what the app's form and a sweep would (issue #26:
    the CLI trained the demo at batch 8 for one epoch while the app used 16 x 300); a real model keeps batch 8 and
    one epoch; given values and --epochs win; the model's defaults are not 'changes' (a sweep id stays stable)."""
    demo = TrainSettings(model="demo", dataset="synthetic:shapes", ratio="1:1:1", budget_rank=8)
    assert (demo.lr, demo.batch_size, demo.max_steps) == (2e-3, 16, 300)
    real = TrainSettings(model="llava-1.5-7b", dataset="synthetic:shapes", ratio="1:1:1", budget_rank=8)
    assert (real.lr, real.batch_size, real.max_steps) == (2e-4, 8, None)
    given = TrainSettings(model="demo", dataset="synthetic:shapes", ratio="1:1:1", budget_rank=8, batch_size=4, epochs=2)
    assert (given.batch_size, given.max_steps, given.epochs) == (4, None, 2)
    assert not {"lr", "batch_size", "max_steps"} & set(demo.changed())
    assert given.changed()["batch_size"] == 4
    assert TrainSettings.from_dict(demo.to_dict()) == demo
