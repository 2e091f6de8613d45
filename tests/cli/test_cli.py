"""The command line (`python -m toolkit allocate | presets`), per DESIGN.md "CLI contract".

A few runs are real subprocesses (the contract is about the process: exit status, stdout, stderr); most bad
input goes through `toolkit.cli.main([...])` in-process, which is the same code without the ~4 s torch import.
Bad input must exit 2 with exactly one line on stderr, `error: <field>: ...`, and no traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.jobscript import PATIENCE
from toolkit.calculator.structure import PRESET_DIR, presets
from toolkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("vision", "projector", "language")
ALLOCATE_141 = ["allocate", "--model", "llava-1.5-7b", "--ratio", "1:4:1", "--budget-rank", "8"]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    return env


def _cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "toolkit", *args]


def run_cli(args: list[str], tmp_path: Path, timeout: float = PATIENCE) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(args), cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(rc: int, stderr: str, field: str) -> str:
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: "), line
    assert field in line, f"{field!r} not named in {line!r}"
    return line


@pytest.fixture(scope="module")
def heavy_runs(tmp_path_factory):
    """The two subprocesses that build a model, started together (each pays the torch import)."""
    tmp = tmp_path_factory.mktemp("cli")
    out_file = tmp / "lora.json"
    procs = {
        "text": subprocess.Popen(_cmd([*ALLOCATE_141, "--rounding", "uniform"]), cwd=ROOT, env=_env(tmp), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True),
        "json": subprocess.Popen(_cmd([*ALLOCATE_141, "--json", "--output", str(out_file)]), cwd=ROOT,
                                 env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    }
    results = {}
    for key, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=PATIENCE)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            stdout, stderr = proc.communicate()
        results[key] = (proc.returncode, stdout, stderr)
    results["output_file"] = out_file
    return results


# ------------------------------------------------------------------------------------------ subprocesses


@pytest.mark.slow  # the heavy_runs subprocesses
def test_allocate_text_output(heavy_runs):
    rc, stdout, stderr = heavy_runs["text"]
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    assert stdout.startswith("llava-1.5-7b (llava) · mode rank · ratio 1:4:1")
    assert re.search(r"^budget 23,486,464 params \(uniform rank 8 equivalent\) · allocated [\d,]+ · error \+1\.36%  !! over ±1% \(sweeps refuse this arm\)$",
                     stdout, re.M), stdout  # uniform integer ranks miss the budget, and say so
    # component table: name, rank, mean rank, alpha, modules
    assert re.search(r"^vision\s+8\s+8\.000\s+16\s+138\s", stdout, re.M), stdout
    assert re.search(r"^projector\s+32\s+32\.000\s+64\s+2\s", stdout, re.M), stdout
    assert re.search(r"^language\s+8\s+8\.000\s+16\s+224\s", stdout, re.M), stdout
    assert "achieved ratio 1:4:1" in stdout
    assert re.search(r"^warning: 6 dead module\(s\) excluded", stdout, re.M)
    assert re.search(r"^warning: serving: vLLM applies the LoRA on the vision and projector of llava only with "
                     r"--enable-tower-connector-lora", stdout, re.M)


@pytest.mark.slow  # the heavy_runs subprocesses
def test_allocate_json_shape(heavy_runs):
    import peft

    rc, stdout, stderr = heavy_runs["json"]
    assert rc == 0, stderr
    doc = json.loads(stdout)  # one JSON object, nothing else on stdout
    assert isinstance(doc, dict)
    assert doc["model"] == "llava-1.5-7b"
    assert doc["mode"] == "rank"
    assert doc["ratio"] == [1.0, 4.0, 1.0]
    assert doc["budget"] == 23_486_464
    assert isinstance(doc["total"], int) and doc["total"] > 0
    assert doc["budget_error"] == pytest.approx(100 * (doc["total"] - doc["budget"]) / doc["budget"])
    assert abs(doc["budget_error"]) < 2
    assert set(doc["components"]) == set(COMPONENTS)
    for comp, expected_rank in zip(COMPONENTS, (8, 32, 8)):
        c = doc["components"][comp]
        assert {"rank", "alpha", "params", "modules"} <= set(c)
        assert c["rank"] == expected_rank and c["alpha"] == 2 * expected_rank
    assert doc["components"]["vision"]["modules"] == 138
    assert doc["components"]["projector"]["modules"] == 2
    assert doc["components"]["language"]["modules"] == 224
    assert sum(c["params"] for c in doc["components"].values()) == doc["total"]
    assert isinstance(doc["warnings"], list)

    config = peft.LoraConfig(**doc["lora_config"])
    assert len(config.target_modules) == 138 + 2 + 224
    assert config.r == 8 and config.lora_alpha == 16


@pytest.mark.slow  # the heavy_runs subprocesses
def test_allocate_output_file_is_the_lora_config(heavy_runs):
    import peft

    rc, stdout, _ = heavy_runs["json"]
    assert rc == 0
    written = json.loads(heavy_runs["output_file"].read_text())
    assert written == json.loads(stdout)["lora_config"]
    peft.LoraConfig(**written)


def test_bad_ratio_subprocess(tmp_path):
    proc = run_cli(["allocate", "--model", "llava-1.5-7b", "--ratio", "1:-1:2", "--budget-rank", "8"], tmp_path)
    assert_one_line_error(proc.returncode, proc.stderr, "ratio")
    assert proc.stdout == ""


def test_offline_hub_id_subprocess(tmp_path):
    proc = run_cli(["allocate", "--model", "llava-hf/llava-1.5-7b-hf", "--ratio", "1:4:1", "--budget-rank", "8"],
                   tmp_path)
    line = assert_one_line_error(proc.returncode, proc.stderr, "model:")
    assert "llava-hf/llava-1.5-7b-hf" in line and "preset" in line


def test_missing_config_json_subprocess(tmp_path):
    folder = tmp_path / "empty_model"
    folder.mkdir()
    proc = run_cli(["allocate", "--model", str(folder), "--ratio", "1:4:1", "--budget-rank", "8"], tmp_path)
    assert "config.json" in assert_one_line_error(proc.returncode, proc.stderr, "model:")


def test_allocate_help_subprocess(tmp_path):
    proc = run_cli(["allocate", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--model", "--ratio", "--mode", "--budget-rank", "--budget-params", "--budget-percent", "--json",
                 "--audit"):
        assert flag in proc.stdout


def test_presets_subprocess(tmp_path):
    proc = run_cli(["presets"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in presets():
        assert re.search(rf"^{re.escape(name)}\s", proc.stdout, re.M), name


# ------------------------------------------------------------------------------------------- in-process


def call(capsys, args: list[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_main_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["allocate", "--help"])
    assert excinfo.value.code == 0
    assert "--budget-rank" in capsys.readouterr().out


def test_allocate_help_is_generated_from_the_settings(capsys):
    """`allocate` has one flag per AllocateSettings field (the model and allocation groups `train` shares), each
    with the field's doc string as its help, plus its own output options."""
    from toolkit.calculator.settings import AllocateSettings
    from toolkit.cli import make_parser
    from toolkit.fields import settings_fields

    sub = next(a for a in make_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    options = set(sub.choices["allocate"]._option_string_actions) - {"-h", "--help"}
    flags = {f.flag for f in settings_fields(AllocateSettings)}
    assert options - flags == {"--json", "--detail", "--snippet", "--output", "--verify"}
    assert flags <= set(sub.choices["train"]._option_string_actions)  # train takes the same allocation flags
    with pytest.raises(SystemExit):
        main(["allocate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in settings_fields(AllocateSettings):
        assert f.flag in text and " ".join(f.doc.split()) in text, f.name


def test_presets_json(capsys):
    rc, out, err = call(capsys, ["presets", "--json"])
    assert rc == 0 and err == ""
    assert json.loads(out) == presets()


def test_audit(capsys):
    rc, out, err = call(capsys, ["allocate", "--model", "llava-1.5-7b", "--audit", "4:16:4", "--budget-rank", "8"])
    assert rc == 0, err
    assert "mode audit" in out
    assert re.search(r"^budget 23,486,464 params .* · error -49\.\d\d%  !! over ±1% \(sweeps refuse this arm\)$", out, re.M), out
    assert re.search(r"^vision\s+4\s+4\.000\s+8\s", out, re.M)
    assert re.search(r"^projector\s+16\s+16\.000\s+32\s", out, re.M)
    assert re.search(r"^language\s+4\s+4\.000\s+8\s", out, re.M)


def test_audit_json(capsys):
    rc, out, err = call(capsys, ["allocate", "--model", "llava-1.5-7b", "--audit", "4:16:4", "--budget-rank", "8",
                                 "--json"])
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "audit"
    assert [doc["components"][c]["rank"] for c in COMPONENTS] == [4, 16, 4]
    assert doc["budget_error"] == pytest.approx(-49.3, abs=0.5)


def test_snippet_is_python(capsys):
    rc, out, err = call(capsys, [*ALLOCATE_141, "--snippet"])
    assert rc == 0, err
    compile(out, "<snippet>", "exec")
    assert "LoraConfig(" in out and "rank_pattern=" in out


def test_output_file_in_process(capsys, tmp_path):
    target = tmp_path / "cfg.json"
    rc, out, err = call(capsys, [*ALLOCATE_141, "--output", str(target)])
    assert rc == 0, err
    assert f"LoraConfig written to {target}" in out
    cfg = json.loads(target.read_text())
    assert cfg["r"] == 8 and len(cfg["target_modules"]) == 364


def test_output_to_unwritable_path(capsys, tmp_path):
    rc, _, err = call(capsys, [*ALLOCATE_141, "--output", str(tmp_path / "no" / "such" / "dir" / "cfg.json")])
    assert_one_line_error(rc, err, "output:")


def test_share_mode_and_targets_flags(capsys):
    rc, out, err = call(capsys, ["allocate", "--model", "llava-1.5-7b", "--ratio", "1:1:1", "--mode", "share",
                                 "--budget-percent", "0.5", "--targets", "language=attention", "--json"])
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "share"
    assert doc["components"]["language"]["modules"] == 128
    assert doc["components"]["language"]["target_kind"] == "attention"


def _malformed(tmp_path: Path) -> str:
    folder = tmp_path / "bad_json"
    folder.mkdir()
    (folder / "config.json").write_text('{\n  "model_type": "llava"\n  "oops": 1\n}\n')
    return str(folder)


def _empty(tmp_path: Path) -> str:
    folder = tmp_path / "empty"
    folder.mkdir()
    return str(folder)


M = ["allocate", "--model", "llava-1.5-7b"]
BAD_INPUT = [
    ("negative ratio", [*M, "--ratio", "1:-1:2", "--budget-rank", "8"], "ratio:"),
    ("negative ratio (= form)", [*M, "--ratio=-1:1:1", "--budget-rank", "8"], "ratio:"),
    ("non-numeric ratio", [*M, "--ratio", "a:b:c", "--budget-rank", "8"], "ratio:"),
    ("zero ratio", [*M, "--ratio", "0:0:0", "--budget-rank", "8"], "ratio:"),
    ("two-part ratio", [*M, "--ratio", "1:2", "--budget-rank", "8"], "ratio:"),
    ("nan ratio", [*M, "--ratio", "nan:1:1", "--budget-rank", "8"], "ratio:"),
    ("missing ratio", [*M, "--budget-rank", "8"], "ratio:"),
    ("below minimum", [*M, "--ratio", "1:4:1", "--budget-params", "1000"], "minimum"),
    ("above maximum", ["allocate", "--model", "paligemma-3b", "--ratio", "0:1:0", "--budget-rank", "8"], "maximum"),
    ("non-numeric budget", [*M, "--ratio", "1:4:1", "--budget-rank", "abc"], "budget"),
    ("negative budget", [*M, "--ratio", "1:4:1", "--budget-rank", "-4"], "budget"),
    ("zero budget", [*M, "--ratio", "1:4:1", "--budget-params", "0"], "budget"),
    ("percent over 100", [*M, "--ratio", "1:4:1", "--budget-percent", "150"], "budget"),
    ("fractional params", [*M, "--ratio", "1:4:1", "--budget-params", "1000.5"], "budget"),
    ("missing budget", [*M, "--ratio", "1:4:1"], "budget"),
    ("two budgets", [*M, "--ratio", "1:4:1", "--budget-rank", "8", "--budget-params", "100"], "--budget-params"),
    ("bad mode", [*M, "--ratio", "1:4:1", "--budget-rank", "8", "--mode", "ranks"], "mode:"),
    ("bad targets", [*M, "--ratio", "1:4:1", "--budget-rank", "8", "--targets", "language=attn"], "targets.language"),
    ("projector=attention", [*M, "--ratio", "1:4:1", "--budget-rank", "8", "--targets", "projector=attention"],
     "targets.projector"),
    ("bad alpha rule", [*M, "--ratio", "1:4:1", "--budget-rank", "8", "--alpha-rule", "bogus"], "alpha"),
    ("bad alpha", [*M, "--ratio", "1:4:1", "--budget-rank", "8", "--alpha", "x"], "alpha"),
    ("fractional audit rank", [*M, "--audit", "4.5:16:4"], "audit:"),
    ("bad patterns", [*M, "--ratio", "1:4:1", "--budget-rank", "8", "--patterns", "vision=x"], "patterns"),
    ("unknown preset-like name", ["allocate", "--model", "llava-7b", "--ratio", "1:4:1", "--budget-rank", "8"],
     "model:"),
    ("missing model", ["allocate", "--ratio", "1:4:1", "--budget-rank", "8"], "--model"),
    ("unknown flag", [*M, "--ratio", "1:4:1", "--budget-rank", "8", "--frobnicate"], "--frobnicate"),
    ("no command", [], "command"),
    ("unknown command", ["allocat"], "allocat"),
]


@pytest.mark.parametrize("args, field", [pytest.param(a, f, id=i) for i, a, f in BAD_INPUT])
def test_bad_input_one_line_error(capsys, args, field):
    rc, out, err = call(capsys, args)
    assert_one_line_error(rc, err, field)
    assert out == ""


@pytest.mark.parametrize("make_folder, field", [(_empty, "config.json"), (_malformed, "line 3")])
def test_bad_local_model_one_line_error(capsys, tmp_path, make_folder, field):
    folder = make_folder(tmp_path)
    rc, out, err = call(capsys, ["allocate", "--model", folder, "--ratio", "1:4:1", "--budget-rank", "8"])
    line = assert_one_line_error(rc, err, "model:")
    assert field in line and out == ""


def test_offline_hub_id_in_process(capsys, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    rc, out, err = call(capsys, ["allocate", "--model", "llava-hf/llava-1.5-7b-hf", "--ratio", "1:4:1",
                                 "--budget-rank", "8"])
    line = assert_one_line_error(rc, err, "model:")
    assert "offline" in line and "local folder" in line


def test_preset_file_paths_are_not_confused_with_hub_ids(capsys):
    # a path to a bundled config file is a local model, not a Hub id
    rc, out, err = call(capsys, ["allocate", "--model", str(PRESET_DIR / "demo.json"), "--ratio", "1:4:1",
                                 "--budget-rank", "8", "--json"])
    assert rc == 0, err
    assert json.loads(out)["model"] == str(PRESET_DIR / "demo.json")


@pytest.mark.parametrize("ranks", ["4:-16:4", "0:0:0", "4:16"])
def test_bad_audit_ranks_name_the_audit_field(capsys, ranks):
    rc, out, err = call(capsys, ["allocate", "--model", "llava-1.5-7b", "--audit", ranks])
    line = assert_one_line_error(rc, err, "error: ")
    assert re.match(r"error: (--)?(audit|ranks)\b", line), line


def test_the_readme_allocate_example_prints_what_the_readme_shows(run_cli):
    """The README's first calculator example, run as written: its output block is what the command prints (the
    README drifted once to uniform-rounding figures while the default had become mixed rounding)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    shown = re.search(r"```\n(llava-1\.5-7b \(llava\) · mode rank · ratio 1:4:1.*?)```", readme, re.S).group(1)
    code, out, _ = run_cli("allocate", "--model", "llava-1.5-7b", "--ratio", "1:4:1", "--budget-rank", "8")
    assert code == 0 and out == shown
