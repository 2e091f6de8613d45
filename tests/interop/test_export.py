"""`export`: an adapter merged into its base loads as the family's own class and computes what base + adapter do.

Every family is a tiny real checkpoint (tests/helpers/tiny_checkpoints.py); its adapter is a real PEFT folder made from
the calculator's allocation with non-zero LoRA weights (a merge of zero B matrices would prove nothing), plus the
cmba.json that makes it a complete CMBA adapter. The reference is the adapter unmerged (PeftModel over the base
loaded as `evaluate` loads it), on a real batch of the family's processor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.jobscript import PATIENCE
from toolkit import runs
from toolkit.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("llava", "llava_next", "blip-2", "blip-2+flan-t5", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm",
            "paligemma", "llava_onevision", "internvl", "gemma3")
"""every tiny checkpoint tests/helpers/tiny_checkpoints.py builds"""
MAX_DIFF: dict[str, float] = {}
"""family -> max |logit difference| (fp32 export vs unmerged), printed at the end of the session with -s"""


def _base(folder: Path):
    from toolkit.calculator.structure import load_structure
    from toolkit.training.modeling import load_model

    return load_model(load_structure(str(folder)), precision="fp32", quantize=None, device=torch.device("cpu"))


def make_adapter(base_dir: Path, out: Path, *, ratio: str = "1:2:1", quantize: str | None = None,
                 base_id: str | None = None) -> Path:
    """A complete CMBA adapter of `base_dir`: the allocation's LoraConfig, random non-zero A and B, cmba.json."""
    from peft import LoraConfig, get_peft_model

    from toolkit.calculator.allocation import allocate
    from toolkit.calculator.spec import AllocationSpec, Budget, Ratio
    from toolkit.calculator.structure import load_structure

    structure = load_structure(base_id or str(base_dir))
    allocation = allocate(structure, AllocationSpec(ratio=Ratio.parse(ratio), budget=Budget("rank", 4)))
    model, _ = _base(base_dir)
    peft_model = get_peft_model(model, LoraConfig(**allocation.lora_config_dict()))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    peft_model.save_pretrained(out)
    runs.write_adapter_doc(out, runs.AdapterDoc(
        name=out.name, base_model={"id": base_id or str(base_dir), "model_type": structure.model_type},
        allocation=allocation.to_dict(), training={"seed": 0, "quantize": quantize}))
    return out


def _batch(processor, model):
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa

    records = list(load_vqa("synthetic:shapes?n=4&seed=3"))
    return VQAFormatter.for_model(processor, model).train_batch(records)  # labels: T5's decoder inputs


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits.float()


@pytest.mark.slow
@pytest.mark.parametrize("key", FAMILIES)
def test_export_loads_as_the_family_class_with_the_same_logits(checkpoints, key, tmp_path):
    import transformers
    from peft import PeftModel

    from toolkit.interop.export import export_merged
    from toolkit.training.processors import load_processor

    base_dir = checkpoints(key)
    adapter = make_adapter(base_dir, tmp_path / "adapter", ratio="1:0:1" if key == "gemma3" else "1:2:1")
    result = export_merged(adapter, tmp_path / "merged", dtype="fp32")

    base, processor = _base(base_dir)
    family_class = type(base)
    reference = PeftModel.from_pretrained(base, str(adapter)).eval()  # unmerged
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["architectures"] == [family_class.__name__] and result.architecture == family_class.__name__
    assert "quantization_config" not in config
    merged = getattr(transformers, config["architectures"][0]).from_pretrained(tmp_path / "merged").eval()
    assert type(merged) is family_class
    assert not any("lora" in n for n, _ in merged.named_parameters())
    files = set(result.files)
    assert "model.safetensors" in files and "README.md" in files and not any(f.endswith(".bin") for f in files)
    # AutoProcessor, without the video part where torchvision is missing here (as the base's was loaded)
    exported_processor = load_processor(str(tmp_path / "merged"), revision=None, model_id=key)
    assert type(exported_processor).__name__ == type(processor).__name__

    batch = _batch(exported_processor, merged)
    want, got = _logits(reference, batch), _logits(merged, batch)
    with reference.disable_adapter():
        base_only = _logits(reference, batch)
    diff = (want - got).abs().max().item()
    MAX_DIFF[key] = diff
    scale = want.abs().max().item()
    print(f"\n{key}: max |logits(export) - logits(base + adapter, unmerged)| = {diff:.2e} (max |logit| {scale:.3g})")
    assert diff <= 5e-5 * max(scale, 10.0), (diff, scale)  # fp32 rounding of the merged weights, relative
    assert (want - base_only).abs().max().item() > 100 * max(diff, 1e-6)  # the adapter changes the logits


@pytest.mark.slow
def test_bf16_export_is_within_bf16_rounding(checkpoints, tmp_path):
    """The default 16-bit export: the same model up to bf16 rounding of the weights."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from toolkit.interop.export import export_merged

    base_dir = checkpoints("llava")
    adapter = make_adapter(base_dir, tmp_path / "adapter")
    result = export_merged(adapter, tmp_path / "merged")
    assert result.dtype == "bf16" and result.lmms_eval_model == "llava_hf"
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    assert merged.dtype == torch.bfloat16
    base, _ = _base(base_dir)
    reference = PeftModel.from_pretrained(base, str(adapter)).eval()
    batch = _batch(AutoProcessor.from_pretrained(tmp_path / "merged"), merged)
    want, got = _logits(reference, batch), _logits(merged.float(), batch)
    assert (want - got).abs().max().item() < 0.05 * want.abs().max().item()
    readme = (tmp_path / "merged" / "README.md").read_text()
    assert f"python -m lmms_eval --model llava_hf --model_args pretrained={result.path} --tasks vqav2_val" in readme
    assert "--log_samples" in readme and "import-eval" in readme


def test_bad_input_is_one_line(tmp_path):
    """Refused before anything is loaded: one line naming the field, exit 2."""
    from toolkit.interop.export import export_merged

    with pytest.raises(InputError, match="^adapter: .* is not a folder"):
        export_merged(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(InputError, match="^adapter: .* has no cmba.json"):
        export_merged(tmp_path / "not-an-adapter", tmp_path / "out")
    with pytest.raises(InputError, match="^dtype: 'int8' is not one of bf16, fp16, fp32"):
        export_merged(tmp_path / "not-an-adapter", tmp_path / "out", dtype="int8")
    cli = [sys.executable, "-m", "toolkit", "export"]
    for args, field in ((["--adapter", str(tmp_path / "missing"), "--merged", str(tmp_path / "o")], "adapter"),
                        (["--adapter", str(tmp_path), "--merged", str(tmp_path / "o"), "--dtype", "q4"], "export"),
                        (["--merged", str(tmp_path / "o")], "export")):
        r = subprocess.run([*cli, *args], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(f"error: {field}:"), r.stderr
    r = subprocess.run([*cli, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "--merged" in r.stdout


@pytest.mark.slow
def test_output_folder_rules(checkpoints, tmp_path):
    from toolkit.interop.export import export_merged

    adapter = make_adapter(checkpoints("llava"), tmp_path / "adapter")
    with pytest.raises(InputError, match="^merged: .* is the adapter folder or inside it"):
        export_merged(adapter, adapter / "merged")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="^merged: .* is not empty"):
        export_merged(adapter, busy)
    assert (busy / "keep.txt").exists()
    export_merged(adapter, busy, overwrite=True)
    assert not (busy / "keep.txt").exists() and (busy / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".*tmp-export"))  # nothing left behind


def _demo_adapter(store: Path) -> Path:
    """A complete adapter of the offline `demo` model (the preset the app trains by default)."""
    from toolkit.calculator.structure import load_structure
    from toolkit.training.modeling import model_source

    return make_adapter(Path(model_source(load_structure("demo"))[0]), store / "demo-1-2-1-s0",
                        base_id="demo")


# ------------------------------------------------------------------- as a background job (the Publish page's way)

@pytest.fixture(scope="module")
def demo_adapter(tmp_path_factory) -> Path:
    return _demo_adapter(tmp_path_factory.mktemp("export-store"))


def _run_worker() -> None:
    """The real worker, in its own process, until the queue is empty (CMBA_JOBS_DIR says which queue)."""
    r = subprocess.run([sys.executable, "-m", "toolkit", "worker", "--once", "--slots", "1", "--poll", "0.1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=PATIENCE)
    assert r.returncode == 0, r.stderr


def test_queue_export_refuses_what_the_cli_refuses_and_queues_nothing(demo_adapter, tmp_path):
    from toolkit.interop.export import export_merged, queue_export
    from toolkit.queue.store import JobStore

    store = JobStore(tmp_path / "jobs")
    (tmp_path / "not-an-adapter").mkdir()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    for adapter, out, dtype, match in (
            (tmp_path / "missing", tmp_path / "out", "bf16", "^adapter: .* is not a folder"),
            (tmp_path / "not-an-adapter", tmp_path / "out", "bf16", "^adapter: .* has no cmba.json"),
            (demo_adapter, tmp_path / "out", "int8", "^dtype: 'int8' is not one of bf16, fp16, fp32"),
            (demo_adapter, demo_adapter / "merged", "bf16", "^merged: .* is the adapter folder or inside it"),
            (demo_adapter, busy, "bf16", "^merged: .* is not empty"),
            (demo_adapter, "  ", "bf16", "^merged: required")):
        with pytest.raises(InputError, match=match) as queued:
            queue_export(adapter=adapter, output=out, dtype=dtype, store=store)
        with pytest.raises(InputError) as direct:  # the same line the CLI prints, before any model is loaded
            export_merged(adapter, out, dtype=dtype)
        assert str(queued.value) == str(direct.value) and "\n" not in str(queued.value)
    assert store.list() == [] and (busy / "keep.txt").exists()


def test_queueing_the_same_export_twice_gives_one_job(demo_adapter, tmp_path):
    from toolkit.interop.export import latest_export, queue_export
    from toolkit.queue.executor import PYTHON
    from toolkit.queue.states import JobState
    from toolkit.queue.store import JobStore

    store = JobStore(tmp_path / "jobs")
    out = tmp_path / "exports" / "m"
    assert latest_export(out, store=store) is None
    first = queue_export(adapter=demo_adapter, output=out, store=store)
    again = queue_export(adapter=str(demo_adapter), output=str(out), dtype="bf16", overwrite=False, store=store)
    assert again.id == first.id and [j.id for j in store.list()] == [first.id] and first.state is JobState.QUEUED
    assert first.steps == ((PYTHON, "-m", "toolkit", "export", "--adapter", str(demo_adapter.resolve()),
                            "--merged", str(out.resolve()), "--dtype", "bf16"),)
    assert first.meta["kind"] == "export" and latest_export(out, store=store).id == first.id
    with pytest.raises(InputError, match=f"^merged: job {first.id} \\(queued\\) is already exporting"):
        queue_export(adapter=demo_adapter, output=out, dtype="fp16", store=store)  # both would write the folder
    assert len(store.list()) == 1 and not out.exists()  # queueing writes nothing there
    store.request_cancel(first.id)  # finished: the same export asked again is a new job
    second = queue_export(adapter=demo_adapter, output=out, overwrite=True, store=store)
    assert second.id != first.id and second.steps[0][-1] == "--overwrite"
    assert latest_export(out, store=store).id == second.id and len(store.list()) == 2


@pytest.mark.slow
@pytest.mark.training
def test_queued_export_runs_in_the_worker_and_loads_as_llava(tmp_path, monkeypatch):
    from transformers import LlavaForConditionalGeneration

    from toolkit.interop.export import export_notes, latest_export, queue_export
    from toolkit.queue.states import JobState
    from toolkit.queue.store import JobStore

    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    adapter = _demo_adapter(tmp_path / "adapters")
    out = tmp_path / "exports" / adapter.name
    job = queue_export(adapter=adapter, output=out, dtype="fp32")
    _run_worker()
    job = JobStore().get(job.id)
    assert job.state is JobState.SUCCEEDED, (job.reason, job.message)
    assert latest_export(out).id == job.id
    merged = LlavaForConditionalGeneration.from_pretrained(out)
    assert type(merged) is LlavaForConditionalGeneration and merged.dtype == torch.float32
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert export_notes(out) == (
        f"python -m lmms_eval --model llava_hf --model_args pretrained={out} --tasks vqav2_val --batch_size 1 "
        "--log_samples --output_path lmms-eval-out", [])


@pytest.mark.slow
@pytest.mark.training
def test_publish_page_queues_the_export_as_a_job(tmp_path, monkeypatch):
    """The Publish page's "Export merged model" queues a job and starts the worker (the page loads no model);
    the expander follows the job, and shows lmms-eval's command once the worker has run it; a second export into
    the now full folder is refused in one line, nothing queued."""
    from streamlit.testing.v1 import AppTest

    import toolkit.queue.lifecycle
    from toolkit.interop.export import latest_export
    from toolkit.queue.states import JobState
    from toolkit.queue.store import JobStore

    monkeypatch.setenv("CMBA_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("CMBA_ADAPTERS_DIR", str(tmp_path / "adapters"))
    started = []  # the detached worker is this test's to run (below), not the page's
    monkeypatch.setattr(toolkit.queue.lifecycle, "ensure_worker", lambda **kw: started.append(kw) or {"started": True})
    adapter = _demo_adapter(tmp_path / "adapters")
    at = AppTest.from_file(str(ROOT / "app_pages" / "publish.py"), default_timeout=PATIENCE)
    at.session_state["publish_adapter"] = str(adapter)
    at.run()
    assert not at.exception
    out = tmp_path / "exports" / adapter.name
    assert at.text_input(key="export_out").value == str(out)  # default: next to the store, not in it
    assert not (tmp_path / "jobs").exists()  # showing the page creates no job store

    at.button(key="export_button").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = latest_export(out)
    assert job.state is JobState.QUEUED and started == [{}] and not out.exists()
    assert [i.value for i in at.info] == [f"Export job {job.id} (bf16) queued: it starts when the background worker "
                                          "has a free slot"]
    at.button(key="export_button").click().run()  # clicked again while queued: the same job
    assert not at.error and [j.id for j in JobStore().list()] == [job.id]

    _run_worker()
    at.run()
    assert not at.exception and not at.error and JobStore().get(job.id).state is JobState.SUCCEEDED
    assert at.success[0].value == f"Export job {job.id} (bf16) succeeded: the merged model is in {out}"
    assert [c.value for c in at.code if "lmms_eval" in c.value] == [
        f"python -m lmms_eval --model llava_hf --model_args pretrained={out} --tasks vqav2_val --batch_size 1 "
        f"--log_samples --output_path lmms-eval-out"]
    at.button(key="export_button").click().run()
    assert at.error[0].value.startswith(f"merged: '{out}' is not empty") and len(JobStore().list()) == 1
