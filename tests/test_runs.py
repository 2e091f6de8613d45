"""The run folder (toolkit.runs): record round trips, atomic writes, torn metrics, format-1 folders, completeness.

Folders are real files in tmp_path; the format-1 folder is written by hand exactly as the code before runs.py
wrote it (key order and all), so a change of format that old folders cannot read fails here.
"""

import json
import threading
from pathlib import Path

import pytest

from toolkit import runs
from toolkit.errors import InputError

ADAPTER = {"format": "cmba-adapter/1", "kind": "adapter", "name": "demo-1-4-1-rank8-s0",
           "created": "2026-01-01T00:00:00+00:00",
           "base_model": {"id": "demo", "hub_id": None, "revision": None, "model_type": "llava", "family": "llava",
                          "weights": "/x/demo_model"},
           "allocation": {"model": "demo", "mode": "rank", "ratio": [1.0, 4.0, 1.0], "budget": 100000, "total": 99968,
                          "components": {"vision": {"rank": 4}, "projector": {"rank": 16}, "language": {"rank": 4}}},
           "training": {"seed": 0, "max_steps": 3, "learning_rate": 0.0002, "precision": "fp32"},
           "dataset": {"id": "synthetic:shapes?n=200", "revision": None, "split": "train", "size": 200,
                       "source_size": 200, "limit": None, "sample_seed": 0, "columns": {}},
           "result": {"steps": 3, "train_time_s": 1.5, "final_loss": 1.2, "no_gradient_modules": []},
           "versions": {"python": "3.12.0", "cmba": "0.1.0", "torch": "2.5.0"}}
RESULTS = {"format": "cmba-eval/1", "adapter": "demo-1-4-1-rank8-s0", "base_model": "demo",
           "dataset": {"id": "synthetic:shapes?n=50", "split": "validation", "limit": None, "n": 2},
           "settings": {"max_new_tokens": 10, "batch_size": 32, "decoding": "greedy"},
           "scores": {"overall": 50.0, "per_answer_type": {"yes/no": 50.0}, "per_question_type": {}, "n": 2},
           "eval_time_s": 0.5, "questions_per_s": 4.0, "created": "2026-01-01T00:01:00+00:00"}
PREDICTION = {"question_id": "q1", "question": "Is it red?", "prediction": "yes", "raw_prediction": "Yes.",
              "answers": ["yes"] * 10, "answer_type": "yes/no", "question_type": "is", "accuracy": 1.0}
TAG = "synthetic-shapes-n-50__validation__n2"


def format1_folder(root: Path, name: str = "demo-1-4-1-rank8-s0") -> Path:
    """An adapter folder as the code before toolkit.runs wrote it (format cmba-adapter/1), by hand."""
    folder = root / name
    (folder / "eval" / TAG).mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (folder / "cmba.json").write_text(json.dumps({**ADAPTER, "name": name}, indent=2) + "\n")
    with open(folder / "metrics.jsonl", "w") as f:
        for step in (1, 2, 3):
            f.write(json.dumps({"step": step, "max_steps": 3, "epoch": step * 8 / 200, "loss": 2.0 / step,
                                "lr": 1e-4, "samples_per_s": 10.0, "elapsed_s": step * 0.5, "eta_s": 3.0 - step,
                                "time": 1.7e9 + step}) + "\n")
    (folder / "eval" / TAG / "results.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
    with open(folder / "eval" / TAG / "predictions.jsonl", "w") as f:
        f.write(json.dumps(PREDICTION) + "\n")
        f.write(json.dumps({**PREDICTION, "question_id": 2, "prediction": "no", "accuracy": 0.0}) + "\n")
    return folder


def test_format1_folder_still_reads(tmp_path):
    folder = format1_folder(tmp_path)
    doc = runs.read_adapter_doc(folder)
    assert doc.format == "cmba-adapter/1" and doc.kind == "adapter" and doc.allocation.ratio == [1.0, 4.0, 1.0]
    assert doc.to_dict() == ADAPTER and list(doc.to_dict()) == list(ADAPTER)  # nothing lost, same key order
    assert runs.is_complete(folder) and [f for f, _ in runs.list_adapters(tmp_path)] == [folder]
    assert [(m.step, m.loss) for m in runs.read_metrics(folder)] == [(1, 2.0), (2, 1.0), (3, 2.0 / 3)]
    assert runs.last_metric(folder).step == 3 and runs.last_metric(folder).eta_s == 0.0
    assert runs.evaluations(folder) == [TAG]
    result = runs.read_evaluation(folder, TAG)
    assert result.scores["overall"] == 50.0 and result.to_dict() == RESULTS
    preds = runs.read_predictions(folder, TAG)
    assert [(p.question_id, p.prediction, p.accuracy) for p in preds] == [("q1", "yes", 1.0), ("2", "no", 0.0)]
    # and the modules built on runs.py read it the same way
    from toolkit.evaluation.compare import scan
    from toolkit.hub.publish import list_adapters

    store = scan(tmp_path)
    assert [(r["name"], r["accuracy"], r["ranks"]) for r in store.rows] == [("demo-1-4-1-rank8-s0", 50.0, "4:16:4")]
    assert list_adapters(tmp_path) == [folder]


def test_adapter_doc_round_trip_keeps_unknown_keys(tmp_path):
    doc = runs.AdapterDoc.from_dict({**ADAPTER, "notes": {"by": "hand"}})
    assert doc.extra == {"notes": {"by": "hand"}}
    written = runs.write_adapter_doc(tmp_path, doc)
    assert json.loads((tmp_path / runs.ADAPTER_DOC).read_text()) == written == {**ADAPTER, "notes": {"by": "hand"}}
    assert runs.read_adapter_doc(tmp_path) == doc
    base = runs.AdapterDoc(kind="base", name="base--demo", base_model={"id": "demo"})
    assert runs.AdapterDoc.from_dict(base.to_dict()) == base
    assert set(base.to_dict()) == {"format", "kind", "name", "base_model"}  # no empty sections written


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """cmba.json as training writes it (`engine.finish`, a stub in place of the PEFT model), for a plain run, a
    quantized run on a held-out part under torchrun, and a halving snapshot (toolkit.study.rung's result)."""
    from types import SimpleNamespace

    from toolkit.calculator.structure import load_structure
    from toolkit.data.sources import DatasetInfo
    from toolkit.training import engine
    from toolkit.training.settings import TrainSettings

    class Peft:
        peft_config = {"default": SimpleNamespace(base_model_name_or_path=None)}

        def save_pretrained(self, folder, safe_serialization):
            Path(folder).mkdir(parents=True)
            for name in runs.ADAPTER_FILES:
                (Path(folder) / name).write_bytes(b"{}")

    root = tmp_path_factory.mktemp("trained")
    settings = TrainSettings.from_dict({"model": "demo", "dataset": "synthetic:shapes?n=8", "max_steps": 2,
                                        "ratio": "1:4:1", "budget_rank": 4})
    structure = load_structure("demo")
    allocation = settings.allocation(structure)
    seen = {"questions": 8, "images": 8, "digest": "ab12"}
    plain = DatasetInfo(id="synthetic:shapes?n=8", split="train", size=8, source_size=8).to_dict()
    held = DatasetInfo(id="synthetic:shapes?n=8", split="train", size=6, source_size=8, holdout=0.25, part="train")
    result = {"steps": 2, "train_time_s": 1.5, "samples_per_s": 10.7, "final_loss": 0.5, "peak_memory_bytes": 1 << 20,
              "peak_memory_kind": "cpu_max_rss", "no_gradient_modules": [], "device": "cpu"}
    variants = {
        "plain": (settings, plain, result),
        "4bit-holdout-torchrun": (settings.replace(quantize="4bit", allow_budget_error=True), held.to_dict(),
                                  {**result, "distributed": {"world_size": 2, "backend": "gloo"}}),
        "snapshot": (settings, plain, {"steps": 1, "schedule_steps": 2, "train_time_s": 0.7, "final_loss": 0.9,
                                       "no_gradient_modules": ["x.lora"], "device": "cpu", "snapshot_of": "/r"}),
    }
    for name, (s, data, res) in variants.items():
        (root / name).mkdir()
        engine.finish(root / name, Peft(), s, structure, allocation, {**data, "trained_on": seen}, precision="fp32",
                      result=res)
    return root


@pytest.mark.parametrize("name", ["plain", "4bit-holdout-torchrun", "snapshot"])
def test_cmba_json_as_training_writes_it_round_trips_byte_for_byte(trained, tmp_path, name):
    written = (trained / name / runs.ADAPTER_DOC).read_bytes()
    doc = runs.read_adapter_doc(trained / name)
    assert isinstance(doc.allocation, runs.AllocationInfo) and doc.allocation.total and doc.training.max_steps
    optional = {"plain": [doc.dataset.trained_on],
                "4bit-holdout-torchrun": [doc.training.quantization, doc.training.allow_budget_error,
                                          doc.dataset.holdout, doc.dataset.part, doc.result.distributed],
                "snapshot": [doc.result.schedule_steps, doc.result.snapshot_of]}[name]
    assert None not in optional  # the keys written only sometimes are read into their fields
    runs.write_adapter_doc(tmp_path, doc)
    assert (tmp_path / runs.ADAPTER_DOC).read_bytes() == written
    assert runs.AdapterDoc.from_dict(doc.to_dict()) == doc


def test_sections_are_typed_and_keep_what_they_do_not_know():
    doc = runs.AdapterDoc.from_dict({**ADAPTER, "training": {"seed": 0, "future_knob": [1], "max_steps": 3,
                                                             "epochs": None}})
    assert doc.base_model.hub_id is None and doc.base_model.family == "llava" and doc.dataset.size == 200
    assert doc.allocation.components["projector"]["rank"] == 16 and doc.result.final_loss == 1.2
    assert doc.training.extra == {"future_knob": [1]} and doc.training.learning_rate is None
    assert list(doc.to_dict()["training"].items()) == [("seed", 0), ("future_knob", [1]), ("max_steps", 3),
                                                       ("epochs", None)]  # order, unknown keys and nulls kept
    base = runs.AdapterDoc(kind="base", name="base--demo")
    assert base.base_model == runs.BaseModelInfo() and base.to_dict()["base_model"] == {}
    built = runs.TrainingInfo(seed=1, max_steps=5)  # built in code: a field left None is not written
    assert built.to_dict() == {"seed": 1, "max_steps": 5} and runs.TrainingInfo.from_dict(built.to_dict()) == built


@pytest.mark.parametrize("section, value, message", [
    ("training", {"seed": 0, "max_steps": "10"}, 'training.max_steps: must be a whole number, got "10"'),
    ("training", {"gradient_checkpointing": "no"}, "training.gradient_checkpointing: must be true or false"),
    ("training", {"component_lr": {"projector": "high"}}, "training.component_lr: must be an object with numbers"),
    ("allocation", {"ratio": [1, "4", 1]}, "allocation.ratio: must be a list of numbers"),
    ("allocation", {"total": True}, "allocation.total: must be a whole number, got true"),
    ("allocation", {"components": {"vision": 8}}, "allocation.components: must be an object with objects"),
    ("base_model", {"id": 7}, "base_model.id: must be a string, got 7"),
    ("base_model", None, "base_model: must be an object"),
    ("dataset", {"columns": ["q", "a"]}, "dataset.columns: must be an object"),
    ("result", {"final_loss": "low"}, 'result.final_loss: must be a number, got "low"'),
    ("versions", ["3.12"], "versions: must be an object"),
])
def test_a_section_of_the_wrong_type_is_a_one_line_error_naming_the_field(tmp_path, section, value, message):
    (tmp_path / runs.ADAPTER_DOC).write_text(json.dumps({**ADAPTER, section: value}))
    with pytest.raises(InputError) as info:
        runs.read_adapter_doc(tmp_path)
    assert message in str(info.value) and "cmba.json" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match=message.split(":")[0].replace(".", r"\.")):
        runs.AdapterDoc(name="x", **{section: value})


def test_run_info_round_trip(tmp_path):
    info = runs.RunInfo(fingerprint="abc123", max_steps=20, settings={"seed": 1}, dataset={"id": "x"}, started=1.5)
    assert runs.read_run_info(tmp_path) is None
    runs.write_run_info(tmp_path, info)
    assert runs.read_run_info(tmp_path) == info
    runs.clear_run_info(tmp_path)
    assert runs.read_run_info(tmp_path) is None
    with pytest.raises(InputError, match="max_steps: must be >= 1"):
        runs.RunInfo(fingerprint="abc", max_steps=0)


def test_eval_result_and_predictions_round_trip(tmp_path):
    result = runs.EvalResult.from_dict(RESULTS)
    preds = [runs.Prediction.from_dict(PREDICTION), runs.Prediction(question_id=7, prediction="two", answers=["2"])]
    target = runs.write_evaluation(tmp_path, TAG, result=result, predictions=preds)
    assert target == runs.eval_dir(tmp_path, TAG) and runs.evaluations(tmp_path) == [TAG]
    assert runs.read_evaluation(tmp_path, TAG) == result
    assert runs.read_predictions(tmp_path, TAG) == [preds[0], runs.Prediction(question_id="7", prediction="two",
                                                                               answers=["2"])]
    better = runs.EvalResult.from_dict({**RESULTS, "scores": {**RESULTS["scores"], "overall": 75.0}})
    runs.write_evaluation(tmp_path, TAG, result=better, predictions=preds[:1])  # replaces the old one whole
    assert runs.read_evaluation(tmp_path, TAG).scores["overall"] == 75.0 and len(runs.read_predictions(tmp_path, TAG)) == 1
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [TAG]  # no temporary or old folder left
    assert runs.read_predictions(tmp_path, "other") is None


def test_metric_lines_round_trip_and_torn_last_line(tmp_path):
    lines = [runs.MetricLine(step=s, max_steps=4, loss=1.0 / s, lr=1e-3, extra={"grad_norm": 0.5}) for s in (1, 2, 3)]
    for line in lines:
        runs.append_metric(tmp_path, line)
    with open(runs.metrics_path(tmp_path), "a") as f:
        f.write('{"step": 4, "max_steps": 4, "lo')  # a crash in the middle of a write
    assert runs.read_metrics(tmp_path) == lines
    assert runs.last_metric(tmp_path) == lines[-1]
    runs.truncate_metrics(tmp_path, step=2)  # resume from the checkpoint of step 2
    assert runs.read_metrics(tmp_path) == lines[:2]
    assert runs.metrics_path(tmp_path).read_text().endswith("}\n")  # the torn line is gone too
    assert runs.read_metrics(tmp_path / "missing") == [] and runs.last_metric(None) is None


def test_write_json_never_shows_a_partial_file(tmp_path):
    path = tmp_path / "doc.json"
    runs.write_json(path, {"v": 0})

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        runs.write_json(path, {"v": 1, "bad": Unprintable()})  # fails half-way through the dump
    assert json.loads(path.read_text()) == {"v": 0} and [p.name for p in tmp_path.iterdir()] == ["doc.json"]

    seen, done = [], threading.Event()

    def reader():
        while not done.is_set():
            seen.append(runs.read_json(path)["v"])  # raises (and the test fails) on a half-written file

    t = threading.Thread(target=reader)
    t.start()
    for v in range(1, 300):
        runs.write_json(path, {"v": v, "pad": "x" * 20000})
    done.set()
    t.join()
    assert seen == sorted(seen) and runs.read_json(path)["v"] == 299


def test_write_evaluation_failure_keeps_the_old_evaluation(tmp_path):
    runs.write_evaluation(tmp_path, TAG, result=runs.EvalResult.from_dict(RESULTS), predictions=[])

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    bad = runs.Prediction(question_id="q", prediction="p", extra={"oops": Unprintable()})
    with pytest.raises(RuntimeError):
        runs.write_evaluation(tmp_path, TAG, result=runs.EvalResult.from_dict(RESULTS), predictions=[bad])
    assert runs.read_evaluation(tmp_path, TAG).scores["overall"] == 50.0
    assert [p.name for p in (tmp_path / "eval").iterdir()] == [TAG]


@pytest.mark.parametrize("text, message", [
    ('{"format": "cmba-adapter/1", "kind": "adap', r"adapter: cannot read '.*cmba\.json'"),
    ("[1, 2]", r"adapter: '.*cmba\.json' is not a JSON object"),
    ('{"format": "cmba-adapter/9", "name": "x"}', r"cmba\.json'.*format: 'cmba-adapter/9' is not readable"),
    ('{"kind": "merged", "name": "x"}', r"cmba\.json'.*kind: 'merged' is not one of adapter, base"),
    ('{"name": "x", "allocation": [1, 4, 1]}', r"cmba\.json'.*allocation: must be an object"),
])
def test_damaged_cmba_json_is_a_one_line_error(tmp_path, text, message):
    (tmp_path / "cmba.json").write_text(text)
    with pytest.raises(InputError, match=message) as info:
        runs.read_adapter_doc(tmp_path)
    assert "\n" not in str(info.value)
    assert runs.list_adapters(tmp_path.parent) == []  # left out of listings, not a crash


def test_damaged_cmba_json_from_the_cli(tmp_path, capsys):
    (tmp_path / "cmba.json").write_text("{not json")
    from toolkit.cli import main

    assert main(["evaluate", "--adapter", str(tmp_path), "--dataset", "synthetic:shapes?n=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: adapter: cannot read") and "cmba.json" in err and "\n" not in err


def test_completeness_of_runs_and_checkpoints(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    assert not runs.is_complete(folder) and runs.latest_checkpoint(folder) is None
    for step, state in ((10, True), (20, True), (30, False)):  # step 30: renamed but its state.json never came
        runs.checkpoint_path(folder, step).mkdir(parents=True)
        if state:
            (runs.checkpoint_path(folder, step) / runs.CHECKPOINT_STATE).write_text("{}")
    (runs.checkpoints_dir(folder) / ".step-0000040.tmp-123").mkdir()  # being written
    assert [s for s, _ in runs.complete_checkpoints(folder)] == [10, 20]
    assert runs.latest_checkpoint(folder) == runs.checkpoint_path(folder, 20)
    from toolkit.training import checkpoint

    assert checkpoint.latest(folder) == runs.latest_checkpoint(folder)  # one completeness rule
    runs.write_adapter_doc(folder, runs.AdapterDoc.from_dict(ADAPTER))
    assert runs.is_complete(folder)


def test_slurm_resumes_only_from_a_complete_checkpoint(tmp_path):
    from toolkit.queue.slurm.executor import _has_checkpoint
    from toolkit.queue.store import JobStore, NewJob

    out = tmp_path / "run"
    job = JobStore(tmp_path / "jobs").submit(NewJob(name="j", steps=[["true"]], output_dir=str(out)))
    assert not _has_checkpoint(job)
    runs.checkpoint_path(out, 5).mkdir(parents=True)  # a folder without state.json is not a checkpoint
    assert not _has_checkpoint(job)
    (runs.checkpoint_path(out, 5) / runs.CHECKPOINT_STATE).write_text("{}")
    assert _has_checkpoint(job)


def test_job_progress_reads_the_run_folder(tmp_path):
    from toolkit.queue.store import JobStore, NewJob
    from toolkit.study.progress import job_progress, job_scores, loss_curves

    folder = format1_folder(tmp_path)
    (folder / "eval" / "broken").mkdir()
    (folder / "eval" / "broken" / "results.json").write_text("{")
    job = JobStore(tmp_path / "jobs").submit(NewJob(name="j", steps=[["python", "-m", "toolkit", "train"]],
                                                    output_dir=str(folder), meta={"ratio": "1:4:1", "seed": 0}))
    p = job_progress(job)
    assert (p["step"], p["max_steps"], p["fraction"], p["phase"]) == (3, 3, 1.0, "train")
    assert job_scores(job) == {TAG: 50.0}  # the unreadable evaluation is left out
    assert [(r["step"], r["ratio"]) for r in loss_curves([job])] == [(1, "1:4:1"), (2, "1:4:1"), (3, "1:4:1")]


def test_one_slug_for_every_name(tmp_path):
    assert runs.slug("Qwen/Qwen2-VL 2B") == "Qwen-Qwen2-VL-2B"
    assert runs.slug("synthetic:shapes?n=500&seed=3", keep="", limit=60) == "synthetic-shapes-n-500-seed-3"
    assert runs.slug("Qwen2.5-VL_7B", keep=".", lower=True) == "qwen2.5-vl-7b"
    assert runs.slug("..hidden--name..") == "hidden-name" and runs.slug("///") == "model"
    assert runs.slug("x" * 100) == "x" * 80
    assert runs.base_folder("Qwen/Qwen2-VL-2B", root=tmp_path) == tmp_path / "base--Qwen-Qwen2-VL-2B"
    assert runs.base_folder("demo", root=tmp_path).name == "base--demo"
