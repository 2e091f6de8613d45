"""Bad input across every command: exit 2, exactly one `error: ...` line naming the field, no traceback.

One row per case; each is what a new user or an adversary typed (issue #15 lists 35 that used to end in a
traceback, a hang, or a silently wrong result). The commands run in-process through `toolkit.cli.main`, the
same code as `python -m toolkit` without paying the torch import per case; `test_one_subprocess_case` checks
the process contract once for real. Files are real: a trained and evaluated demo adapter and damaged copies,
JSONL datasets with bad rows, a PNG header claiming 30000 x 30000 pixels, configs that lie.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.helpers.faults import TRAIN, one_line_error, scramble, train_adapter, truncate
from tests.helpers.jobscript import PATIENCE
from toolkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = json.loads((ROOT / "toolkit" / "calculator" / "presets" / "demo.json").read_text())
ALLOC = ["allocate", "--model", "demo", "--ratio", "1:1:1", "--budget-rank", "8"]
EVAL = ["--dataset", "synthetic:shapes?n=40", "--split", "validation", "--limit", "4"]
TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123"


def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's shape; the data is tiny)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every file the table needs, built once: datasets, configs, a real adapter and its damaged copies."""
    from PIL import Image

    root = tmp_path_factory.mktemp("bad")
    old = os.environ.get("CMBA_ADAPTERS_DIR")
    os.environ["CMBA_ADAPTERS_DIR"] = str(root / "adapters")
    try:
        adapter = train_adapter(root / "adapters" / "good")
    finally:
        if old is None:
            os.environ.pop("CMBA_ADAPTERS_DIR")
        else:
            os.environ["CMBA_ADAPTERS_DIR"] = old
    ds = root / "ds"
    ds.mkdir()
    Image.new("RGB", (8, 8)).save(ds / "a.png")
    (ds / "bomb.png").write_bytes(_png(30000, 30000))
    Image.new("RGB", (8, 8)).save(root / "outside.png")
    row = {"question_id": 1, "image": "a.png", "question": "what is it?", "answers": ["x"]}

    def jsonl(name, *rows, raw=None):
        path = ds / name
        path.write_bytes(raw if raw is not None else b"".join(json.dumps(r).encode() + b"\n" for r in rows))
        return str(path)

    files = {
        "answers5": jsonl("answers5.jsonl", {**row, "answers": 5}),
        "qid_list": jsonl("qid_list.jsonl", {**row, "question_id": [1]}),
        "latin1": jsonl("latin1.jsonl", raw=json.dumps(row).replace("what", "wh\u00e9t").encode("latin-1") + b"\n"),
        "bomb": jsonl("bomb.jsonl", {**row, "image": "bomb.png"}),
        "dotdot": jsonl("dotdot.jsonl", {**row, "image": "../outside.png"}),
        "absolute": jsonl("absolute.jsonl", {**row, "image": str(root / "outside.png")}),
    }

    def config(name, **change):
        folder = root / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**DEMO, **change}))
        return str(folder)

    files["text_config"] = config("text_config", text_config=5)
    files["layers"] = config("layers", text_config={**DEMO["text_config"], "num_hidden_layers": 100_000})

    def variant(name, damage):
        folder = Path(shutil.copytree(adapter, root / "variants" / name))
        damage(folder)
        return str(folder)

    def edit(file, **change):
        return lambda d: (d / file).write_text(json.dumps({**json.loads((d / file).read_text()), **change}))

    files.update({
        "no_config": variant("no_config", lambda d: (d / "adapter_config.json").unlink()),
        "garbage_weights": variant("garbage", lambda d: scramble(d / "adapter_model.safetensors")),
        "truncated_weights": variant("truncated", lambda d: truncate(d / "adapter_model.safetensors")),
        "cmba_list": variant("cmba_list", lambda d: (d / "cmba.json").write_text("[]")),
        "no_base": variant("no_base", lambda d: (d / "cmba.json").write_text(json.dumps(
            {k: v for k, v in json.loads((d / "cmba.json").read_text()).items() if k != "base_model"}))),
        "bad_config": variant("bad_config", lambda d: (d / "adapter_config.json").write_text("{not json")),
        "other_ranks": variant("other_ranks", edit("adapter_config.json", r=7, rank_pattern={}, alpha_pattern={})),
        "unknown_targets": variant("unknown_targets", edit("adapter_config.json", target_modules=["no_such_layer"],
                                                           rank_pattern={}, alpha_pattern={})),
        "metrics_link": variant("metrics_link", lambda d: ((d / "metrics.jsonl").unlink(),
                                                           (d / "metrics.jsonl").symlink_to("/etc/hostname"))),
        "predictions_link": variant("predictions_link", lambda d: [
            (p.unlink(), p.symlink_to("/etc/hostname")) for p in (d / "eval").glob("*/predictions.jsonl")]),
    })
    blocked = root / "blocked"
    blocked.write_text("a file where the adapter store should be")  # root ignores read-only bits; this blocks all
    files["blocked"] = str(blocked)
    torn = root / "torn"
    shutil.copytree(adapter, torn / "good")
    with open(next((torn / "good" / "eval").glob("*/predictions.jsonl")), "a") as f:
        f.write('{"question_id": 1, "predic')  # a crash mid-write
    files["torn"] = str(torn)
    files["root"] = str(root)
    return files


def _train(w, *extra, dataset="synthetic:shapes?n=40"):
    return ["train", *TRAIN, "--dataset", dataset, "--max-steps", "1", "--output", w["root"] + "/out-never", *extra]


# (case id, argv from the world, the field the one line must name); all exit 2
CASES = [
    # allocate: sizes, ratios, targets, patterns, configs
    ("budget-rank-1e308", lambda w: [*ALLOC[:-1], "1e308"], "budget"),
    ("ratio-1e308", lambda w: [*ALLOC[:3], "--ratio", "1e308:1e308:1e308", *ALLOC[5:]], "ratio"),
    ("targets-twice", lambda w: [*ALLOC, "--targets", "language=attention,language=mlp"], "targets"),
    ("patterns-backtracking", lambda w: [*ALLOC, "--patterns", "vision=(a+)+$;projector=p;language=l"], "patterns.vision"),
    ("patterns-overlapping-choice", lambda w: [*ALLOC, "--patterns", "vision=(.|x)*y;projector=p;language=l"], "exponential"),
    ("patterns-star-star", lambda w: [*ALLOC, "--patterns", "vision=v;projector=(.*)*x;language=l"], "patterns.projector"),
    ("alpha-1e308", lambda w: [*ALLOC, "--alpha", "1e308"], "alpha"),
    ("audit-rank-huge", lambda w: ["allocate", "--model", "demo", "--audit", "99999999999:1:1", "--budget-rank", "8"], "audit"),
    ("model-name-5000-chars", lambda w: ["allocate", "--model", "x" * 5000, "--ratio", "1:1:1", "--budget-rank", "8"], "model"),
    ("targets-100000-chars", lambda w: [*ALLOC, "--targets", "vision=" + "a" * 100_000], "characters cut"),
    ("text-config-not-object", lambda w: ["allocate", "--model", w["text_config"], "--ratio", "1:1:1", "--budget-rank", "8"], "text_config"),
    ("100000-layers", lambda w: ["allocate", "--model", w["layers"], "--ratio", "1:1:1", "--budget-rank", "8"], "num_hidden_layers"),
    # train: settings
    ("epochs-inf", lambda w: [*_train(w)[:-4], "--epochs", "inf", "--output", w["root"] + "/o"], "epochs"),
    ("epochs-1e30", lambda w: [*_train(w)[:-4], "--epochs", "1e30", "--output", w["root"] + "/o"], "epochs"),
    ("seed-beyond-64-bits", lambda w: _train(w, "--seed", str(2 ** 70)), "seed"),
    ("weight-decay-nan", lambda w: _train(w, "--weight-decay", "nan"), "weight-decay"),
    ("weight-decay-negative", lambda w: _train(w, "--weight-decay", "-1"), "weight-decay"),
    ("weight-decay-inf", lambda w: _train(w, "--weight-decay", "inf"), "weight-decay"),
    ("weight-decay-1e30", lambda w: _train(w, "--weight-decay", "1e30"), "weight-decay"),
    ("max-steps-absurd", lambda w: [*_train(w)[:-4], "--max-steps", "10000000000", "--output", w["root"] + "/o"], "max-steps"),
    ("name-empty", lambda w: _train(w, "--name", ""), "name"),
    ("name-blank", lambda w: _train(w, "--name", "  "), "name"),
    ("name-newline", lambda w: _train(w, "--name", "a\nb"), "name"),
    ("dataset-empty", lambda w: _train(w, dataset=""), "dataset"),
    ("budget-rank-huge-train", lambda w: [*_train(w)[:8], "--budget-rank", "1e308", *_train(w)[10:]], "budget-rank"),
    # train: data
    ("answers-a-number", lambda w: _train(w, dataset=w["answers5"]), "answers"),
    ("question-id-a-list", lambda w: _train(w, dataset=w["qid_list"]), "question_id"),
    ("latin-1-byte", lambda w: _train(w, dataset=w["latin1"]), "UTF-8"),
    ("decompression-bomb-png", lambda w: _train(w, dataset=w["bomb"]), "image"),
    ("synthetic-1e11", lambda w: _train(w, dataset="synthetic:shapes?n=100000000000"), "synthetic option n"),
    ("image-dotdot", lambda w: _train(w, dataset=w["dotdot"]), "outside the dataset folder"),
    ("image-absolute", lambda w: _train(w, dataset=w["absolute"]), "outside the dataset folder"),
    # evaluate: adapter folders that are not what they claim
    ("adapter-no-config", lambda w: ["evaluate", "--adapter", w["no_config"], *EVAL], "adapter_config.json"),
    ("adapter-garbage-weights", lambda w: ["evaluate", "--adapter", w["garbage_weights"], *EVAL], "safetensors"),
    ("adapter-truncated-weights", lambda w: ["evaluate", "--adapter", w["truncated_weights"], *EVAL], "truncated"),
    ("adapter-cmba-list", lambda w: ["evaluate", "--adapter", w["cmba_list"], *EVAL], "cmba.json"),
    ("adapter-no-base-model", lambda w: ["evaluate", "--adapter", w["no_base"], *EVAL], "base_model"),
    ("adapter-config-invalid", lambda w: ["evaluate", "--adapter", w["bad_config"], *EVAL], "adapter_config.json"),
    ("adapter-other-ranks", lambda w: ["evaluate", "--adapter", w["other_ranks"], *EVAL], "does not load"),
    ("adapter-unknown-targets", lambda w: ["evaluate", "--adapter", w["unknown_targets"], *EVAL], "no_such_layer"),
    # compare
    ("baseline-x-y", lambda w: ["compare", "--baseline", "x:y", "--adapters-dir", w["torn"]], "baseline"),
    ("baseline-nan", lambda w: ["compare", "--baseline", "nan:1:1", "--adapters-dir", w["torn"]], "baseline"),
    # push: only what the folder holds, never a token echoed
    ("push-metrics-symlink", lambda w: ["push", "--adapter", w["metrics_link"], "--repo-id", "a/b", "--dry-run"], "symbolic link"),
    ("push-predictions-symlink", lambda w: ["push", "--adapter", w["predictions_link"], "--repo-id", "a/b", "--dry-run"], "symbolic link"),
    ("push-truncated-weights", lambda w: ["push", "--adapter", w["truncated_weights"], "--repo-id", "a/b", "--dry-run"], "truncated"),
    ("push-token-as-repo-id", lambda w: ["push", "--adapter", w["truncated_weights"], "--repo-id", TOKEN, "--dry-run"], "looks like an access token"),
    ("push-repo-id-newline", lambda w: ["push", "--adapter", w["truncated_weights"], "--repo-id", "alice/x\n", "--dry-run"], "control characters"),
    ("token-as-model", lambda w: ["allocate", "--model", TOKEN, "--ratio", "1:1:1", "--budget-rank", "8"], "model"),
    ("token-in-dataset", lambda w: _train(w, dataset=TOKEN + ".jsonl"), "dataset"),
    # jobs
    ("sweep-seed-beyond-32-bits", lambda w: ["sweep", "--model", "demo", "--dataset", "synthetic:shapes", "--ratios", "1:1:1",
                                             "--budget-rank", "8", "--seed-list", str(2 ** 40), "--dry-run"], "seed"),
    ("worker-slots-0", lambda w: ["worker", "--slots", "0"], "slots"),
]


@pytest.mark.parametrize("make, field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(world, make, field, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    rc = main(make(world))
    line = one_line_error(rc, capsys.readouterr().err, field)
    assert TOKEN not in line and not (Path(world["root"]) / "out-never" / "cmba.json").exists()


def test_evaluate_base_into_an_unwritable_store_refuses_before_running(world, capsys, monkeypatch):
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", world["blocked"])
    rc = main(["evaluate", "--base", "demo", *EVAL])
    line = one_line_error(rc, capsys.readouterr().err, "adapters-dir")
    assert "cannot write" in line


def test_torn_prediction_line_is_skipped_by_compare(world, capsys):
    assert main(["compare", "--adapters-dir", world["torn"], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["rows"]) == 1


def test_images_anywhere_allows_what_the_user_asked_for(world, tmp_path, monkeypatch):
    from toolkit.data.sources import load_vqa

    data = load_vqa(world["dotdot"], images_anywhere=True)
    assert data[0].image.size == (8, 8)


def test_one_subprocess_case(world, tmp_path):
    """The process contract itself: status 2, one stderr line, for a case that used to be a traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "toolkit", *ALLOC[:-1], "1e308"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=PATIENCE)
    one_line_error(proc.returncode, proc.stderr, "budget")
    assert proc.stdout == ""


@pytest.mark.parametrize("command", ["allocate", "presets", "train", "sweep", "evaluate", "score", "compare", "push",
                                     "jobs", "worker"])
def test_every_help_prints(command, capsys):
    """`train --help` used to crash on a '%' in a field's doc (argparse formats help text)."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("code, fix", [("EROFS", "make that folder writable"), ("ENOSPC", "free some space")])
def test_an_output_folder_that_cannot_be_written_is_one_line_naming_it(code, fix, capsys, monkeypatch, tmp_path):
    """A folder that turns read-only (or full) mid-training: the user's to fix, not 'internal: ... (a bug)'."""
    import errno

    from toolkit.training import engine

    where = str(tmp_path / "run" / "checkpoints")

    def fails(*a, **k):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), where)

    monkeypatch.setattr(engine, "train", fails)
    rc = main(_train({"root": str(tmp_path)}))
    line = one_line_error(rc, capsys.readouterr().err, "output")
    assert where in line and fix in line and "internal" not in line and "retry" in line
