"""The training engine on the shipped demo model and synthetic data (CPU, seconds per run).

One reference run (fixture `run`) trains 1:4:1 at a rank-4 budget for 6 steps; the other tests resume,
repeat, quantize or break it and compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.cli import make_parser
from toolkit.cli.train import settings_from_args
from toolkit.errors import CmbaError, InputError
from toolkit.outcomes import Interrupted
from toolkit.training.engine import train

ROOT = Path(__file__).resolve().parents[2]
DATA = "synthetic:shapes?n=48&seed=1"
BASE_ARGS = ["train", "--model", "demo", "--dataset", DATA, "--ratio", "1:4:1", "--budget-rank", "4",
             "--max-steps", "6", "--batch-size", "4", "--lr", "2e-3", "--checkpoint-every", "2", "--no-progress"]


def settings(output, *extra):
    return settings_from_args(make_parser().parse_args([*BASE_ARGS, "--output", str(output), *extra]))


def losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "ref"
    keep = {}
    doc = train(settings(out), keep=keep, log=lambda m: None)
    return out, doc, keep


def _base_model():
    from transformers import AutoModelForImageTextToText

    from toolkit.training.demo import demo_model_dir

    return AutoModelForImageTextToText.from_pretrained(demo_model_dir())


def _batch(keep):
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa

    records = list(load_vqa("synthetic:shapes?n=4&seed=2", split="validation"))
    return VQAFormatter(keep["processor"], "llava").train_batch(records)


@pytest.mark.training
def test_adapter_folder_and_cmba_json(run):
    out, doc, keep = run
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                    "cmba.json", "metrics.jsonl", "trained_on.json"]
    cmba = json.loads((out / "cmba.json").read_text())
    assert cmba == json.loads(json.dumps(doc, default=str))
    assert cmba["format"] == "cmba-adapter/1" and cmba["base_model"]["id"] == "demo"
    assert cmba["allocation"]["ratio"] == [1, 4, 1] and cmba["allocation"]["total"] == keep["allocation"].total
    assert cmba["dataset"] == {**cmba["dataset"], "id": DATA, "split": "train", "size": 48}
    assert cmba["training"]["seed"] == 0 and cmba["training"]["batch_size"] == 4
    assert cmba["result"]["steps"] == 6 and cmba["result"]["no_gradient_modules"] == []
    assert {"torch", "transformers", "peft", "python", "cmba"} <= set(cmba["versions"])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert {"step", "max_steps", "loss", "lr", "samples_per_s", "elapsed_s", "eta_s"} <= set(lines[0])
    assert lines[-1]["eta_s"] == 0 and lines[0]["lr"] > lines[-1]["lr"]  # cosine decay


@pytest.mark.training
def test_plain_peft_reload_reproduces_logits_and_ranks(run):
    from peft import PeftModel

    out, doc, keep = run
    batch = _batch(keep)
    trained = keep["model"].eval()
    with torch.no_grad():
        expected = trained(**batch).logits
    reloaded = PeftModel.from_pretrained(_base_model(), str(out)).eval()
    with torch.no_grad():
        got = reloaded(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        base = _base_model().eval()(**batch).logits
    assert not torch.allclose(base, expected, atol=1e-4)  # the adapter changes the outputs

    wanted = {m.name: m.rank for m in keep["allocation"].modules if m.rank > 0}
    found = {}
    for name, module in reloaded.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            found[name.removeprefix("base_model.model.")] = module.lora_A["default"].weight.shape[0]
            assert module.lora_B["default"].weight.abs().sum() > 0, f"{name}: LoRA B still zero after training"
    assert found == wanted
    assert sum(p.numel() for n, p in reloaded.named_parameters() if "lora_" in n) == doc["allocation"]["total"]
    ranks: dict[str, list[int]] = {}  # mixed rounding: a floor/ceil mix per component whose mean keeps 1:4:1
    for m in keep["allocation"].modules:
        ranks.setdefault(m.component, []).append(m.rank)
    mean = {c: sum(r) / len(r) for c, r in ranks.items()}
    assert mean["projector"] / mean["vision"] == pytest.approx(4, rel=0.05)
    assert mean["projector"] / mean["language"] == pytest.approx(4, rel=0.05)
    assert all(max(r) - min(r) <= 1 for r in ranks.values())


@pytest.mark.training
def test_same_seed_same_curve_and_resume_continues_the_same_run(run, tmp_path):
    out, doc, _ = run
    again = tmp_path / "again"
    train(settings(again), log=lambda m: None)
    assert losses(again) == losses(out)  # same seed -> same loss curve, bit for bit on CPU

    other = tmp_path / "seed1"
    train(settings(other, "--seed", "1"), log=lambda m: None)
    assert losses(other) != losses(out)

    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train(settings(resumed), stop_after=3, log=lambda m: None)
    assert not (resumed / "cmba.json").exists()
    ckpts = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    assert ckpts == ["step-0000002", "step-0000003"]
    # a partial checkpoint (crash mid-write) is never used: a newer folder without state.json is ignored
    (resumed / "checkpoints" / "step-0000004").mkdir()
    (resumed / "checkpoints" / ".step-0000005.tmp-1").mkdir()
    with pytest.raises(InputError, match="unfinished run"):
        train(settings(resumed), log=lambda m: None)
    logs = []
    final = train(settings(resumed, "--resume"), log=logs.append)
    assert any("resuming" in m and "from step 3/6" in m for m in logs)
    assert final["result"]["steps"] == 6
    assert [json.loads(x)["step"] for x in (resumed / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert losses(resumed) == pytest.approx(losses(out), rel=1e-6)
    assert not (resumed / "checkpoints").exists()


@pytest.mark.training
def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(Interrupted):
        train(settings(out), stop_after=2, log=lambda m: None)
    with pytest.raises(InputError, match="resume: the checkpoint .* other settings"):
        train(settings(out, "--resume", "--lr", "1e-3"), log=lambda m: None)
    with pytest.raises(InputError, match="already holds a complete adapter"):
        train(settings(out, "--overwrite"), log=lambda m: None) and train(settings(out), log=lambda m: None)


@pytest.mark.training
def test_quantized_4bit_training_on_cpu(tmp_path):
    import bitsandbytes as bnb

    out = tmp_path / "q"
    keep = {}
    doc = train(settings(out, "--quantize", "4bit", "--max-steps", "3"), keep=keep, log=lambda m: None)
    model = keep["model"]
    kinds = {name.removeprefix("base_model.model."): type(m) for name, m in model.named_modules()}
    assert kinds["model.language_model.layers.0.self_attn.q_proj.base_layer"] is bnb.nn.Linear4bit
    # vision tower and projector both stay 16-bit: no component's LoRA repairs quantization error the others do not
    assert kinds["model.vision_tower.encoder.layers.0.mlp.fc1.base_layer"] is torch.nn.Linear
    assert kinds["model.multi_modal_projector.linear_1.base_layer"] is torch.nn.Linear
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)
    assert doc["training"]["quantize"] == "4bit" and doc["result"]["steps"] == 3
    assert doc["training"]["quantization"] == {"method": "bitsandbytes nf4, double quantization",
                                               "quantized": ["language"], "kept_16bit": ["vision", "projector", "lm_head"]}
    assert all(line["loss"] == line["loss"] for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()))


def test_gradient_check_finds_modules_that_get_no_gradient():
    """Budget spent on LLaVA's last vision layer (read at vision_feature_layer=-2) is wasted: the check says so."""
    from peft import LoraConfig, get_peft_model

    from toolkit.training.modeling import modules_without_gradient

    last = "model.vision_tower.encoder.layers.3"
    targets = [f"{last}.self_attn.q_proj", f"{last}.mlp.fc1", "model.multi_modal_projector.linear_1",
               "model.language_model.layers.0.self_attn.v_proj"]
    model = get_peft_model(_base_model(), LoraConfig(r=2, target_modules=targets))
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa
    from toolkit.training.demo import build_processor

    batch = VQAFormatter(build_processor(), "llava").train_batch(list(load_vqa("synthetic:shapes?n=2")))
    model(**batch).loss.backward()
    assert sorted(modules_without_gradient(model)) == sorted(targets[:2])


@pytest.mark.parametrize("extra, message", [
    (["--model", "no-such-model"], "model"),
    (["--dataset", "synthetic:shapes?n=0"], r"n must be in \[1, "),
    (["--budget-rank", "100000"], "budget"),
    (["--batch-size", "0"], r"batch-size: must be a whole number in \[1, 65536\]"),
    (["--precision", "fp16"], "precision: fp16 needs a CUDA GPU"),
    (["--precision", "half"], "precision: 'half' is not one of"),
    (["--quantize", "8bit"], "quantize: '8bit' is not supported"),
    (["--max-steps", "3", "--epochs", "1"], "either --max-steps or --epochs"),
])
def test_bad_input_fails_before_training(tmp_path, extra, message):
    out = tmp_path / "bad"
    with pytest.raises(CmbaError, match=message) as err:
        train(settings(out, *extra), log=lambda m: None)
    assert "\n" not in str(err.value)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow  # two CLI subprocesses
def test_cli_bad_dataset_columns_and_missing_bitsandbytes(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"img": "x.png", "text": "q?"}) + "\n")
    env = {**os.environ, "CMBA_ADAPTERS_DIR": str(tmp_path / "adapters")}
    cmd = [sys.executable, "-m", "toolkit", *BASE_ARGS]
    r = subprocess.run([*cmd, "--dataset", str(tmp_path / "d.jsonl")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: dataset:") and "--columns" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # a bitsandbytes that cannot be imported (shadowed by a broken package) -> one line, nothing trained
    shim = tmp_path / "shim" / "bitsandbytes"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('libbitsandbytes_cpu.so: cannot open shared object file')\n")
    env["PYTHONPATH"] = str(tmp_path / "shim")
    r = subprocess.run([*cmd, "--quantize", "4bit"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "quantize: 4bit needs bitsandbytes" in r.stderr
    assert not (tmp_path / "adapters").exists()


@pytest.mark.training
def test_cli_sigterm_checkpoints_and_resume_finishes(tmp_path):
    """A real `train` process stopped by SIGTERM saves a checkpoint, exits 143, and --resume completes it."""
    import signal

    from tests.helpers.jobscript import PATIENCE, wait_for

    out = tmp_path / "sig"
    # batch 1 and 12 steps keep the resumed run short on a loaded machine; the signal goes out once step 1 is
    # written (state, not time), so even a fast machine is still mid-run when it arrives
    args = [sys.executable, "-m", "toolkit", *BASE_ARGS, "--max-steps", "12", "--batch-size", "1",
            "--checkpoint-every", "1000", "--output", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    metrics = out / "metrics.jsonl"
    wait_for(lambda: proc.poll() is not None or (metrics.exists() and metrics.read_text().count("\n") >= 1),
             what="the first training step")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 143, err
    assert "checkpoint saved" in err
    from toolkit.training import checkpoint

    step = int(checkpoint.latest(out).name.split("-")[1])
    assert 1 <= step < 12
    r = subprocess.run([*args, "--resume", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=PATIENCE)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"]["steps"] == 12
    assert f"from step {step}/12" in r.stderr


@pytest.mark.training
def test_per_component_learning_rates_reach_the_optimizer(tmp_path):
    keep = {}
    train(settings(tmp_path / "lr", "--max-steps", "1", "--lr-projector", "3e-3", "--lr-vision", "1e-4"), keep=keep,
          log=lambda m: None)
    from toolkit.training.modeling import param_groups

    groups = {g["component"]: g for g in param_groups(keep["model"], keep["allocation"], settings(tmp_path / "x",
              "--lr-projector", "3e-3", "--lr-vision", "1e-4"))}
    assert set(groups) == {"vision", "projector", "language"}
    assert (groups["vision"]["lr"], groups["projector"]["lr"], groups["language"]["lr"]) == (1e-4, 3e-3, 2e-3)
    n_projector = sum(p.numel() for p in groups["projector"]["params"])
    assert n_projector == keep["allocation"].components["projector"].params
    cmba = json.loads((tmp_path / "lr" / "cmba.json").read_text())
    assert cmba["training"]["component_lr"] == {"vision": 1e-4, "projector": 3e-3}
