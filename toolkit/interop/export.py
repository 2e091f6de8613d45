"""Export an adapter merged into its base model: a plain transformers folder other harnesses load from one path.

    python -m toolkit export --adapter adapters/demo-1-4-1-rank8-s0 --merged exports/demo-1-4-1 [--dtype bf16]

    >>> result = export_merged("adapters/demo-1-4-1-rank8-s0", "exports/demo-1-4-1")
    >>> LlavaForConditionalGeneration.from_pretrained(result.path)      # the base family's own class
    >>> result.lmms_eval_command("vqav2_val")                            # what README.md in the folder says

lmms-eval's HF wrappers (`llava_hf`, `qwen2_vl`, ...) read model, processor and config from one `pretrained`
path and take no adapter; VLMEvalKit's classes take one `model_path`. So the adapter is merged: the base and
its adapter are loaded exactly as `evaluate` loads them (toolkit.training.modeling.load_model +
toolkit.evaluation.evaluate.load_adapter), PEFT's own `merge_and_unload` folds each LoRA into its weight, and
the result is saved with `save_pretrained` (safetensors only) in 16-bit (`--dtype bf16|fp16`; fp32 for checks),
with the base's processor files and a README.md holding the exact lmms-eval and VLMEvalKit command lines.

Loading and merging a 7B model takes minutes and tens of GB, so the app never calls `export_merged`: it calls
`queue_export`, which checks the input as the CLI does and queues the CLI command as one job of the job store
(toolkit.queue.store), run by the detached worker; `latest_export` and `export_notes` read back its state and result.

An adapter trained on a 4-bit base (QLoRA) is merged into that base dequantized (the weights it was trained
against, not the original 16-bit ones), with a warning: the export is a 16-bit model, the size of the base.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit import runs
from toolkit.errors import InputError

if TYPE_CHECKING:
    from toolkit.queue.store import Job, JobStore

DTYPES = ("bf16", "fp16", "fp32")
"""what the merged weights are saved as (bf16: what lmms-eval's wrappers load by default)"""

LMMS_EVAL_MODELS: dict[str, str] = {
    # model_type -> `--model` of lmms-eval 0.7.x (lmms_eval/models/__init__.py), each read from its source:
    "llava": "llava_hf", "llava_next": "llava_hf", "llava_onevision": "llava_hf",  # simple/llava_hf.py model_map
    "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl", "gemma3": "gemma3",
    "internvl": "internvl_hf",  # chat/internvl_hf.py: InternVLForConditionalGeneration (the -HF checkpoints)
    # no dedicated wrapper: the generic chat wrapper (AutoModelForImageTextToText + the processor's chat template)
    "idefics3": "huggingface", "smolvlm": "huggingface",
}
"""BLIP-2 and PaliGemma have no lmms-eval wrapper that loads them: `huggingface` needs a chat template."""

VLMEVALKIT_CLASSES: dict[str, str] = {
    # model_type -> the VLMEvalKit class (vlmeval/vlm) whose `model_path` loads this family's HF checkpoint
    "llava_next": "LLaVA_Next", "llava_onevision": "LLaVA_OneVision_HF", "qwen2_vl": "Qwen2VLChat",
    "qwen2_5_vl": "Qwen2VLChat", "idefics3": "SmolVLM", "smolvlm": "SmolVLM2", "paligemma": "PaliGemma",
    "gemma3": "Gemma3",
}
"""LLaVA-1.5 (VLMEvalKit's `LLaVA` wants the original repo's format), BLIP-2 and InternVL-HF have none."""

README = "README.md"
VIDEO_CONFIG = "video_preprocessor_config.json"
VLMEVALKIT_CONFIG = "vlmevalkit.json"
WARNING = "**Warning**: "
"""how README.md starts a warning line (export_notes reads them back)"""


@dataclass(frozen=True)
class ExportResult:
    """What `export_merged` wrote."""

    path: str
    adapter: str
    """the adapter folder that was merged"""
    base_model: str
    model_type: str
    architecture: str
    """the class `from_pretrained` builds, e.g. LlavaForConditionalGeneration"""
    dtype: str
    dequantized: bool
    """the adapter was trained on a 4-bit base, merged into that base dequantized"""
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def lmms_eval_model(self) -> str | None:
        return LMMS_EVAL_MODELS.get(self.model_type)

    @property
    def vlmevalkit_class(self) -> str | None:
        return VLMEVALKIT_CLASSES.get(self.model_type)

    def lmms_eval_command(self, task: str = "vqav2_val", output: str = "lmms-eval-out") -> str | None:
        """The lmms-eval command line that scores this export on `task`, logging every sample."""
        return lmms_eval_command(self.model_type, self.path, task=task, output=output)

    def to_dict(self) -> dict:
        return {"path": self.path, "adapter": self.adapter, "base_model": self.base_model,
                "model_type": self.model_type, "architecture": self.architecture, "dtype": self.dtype,
                "dequantized": self.dequantized, "files": self.files, "warnings": self.warnings,
                "lmms_eval_model": self.lmms_eval_model, "lmms_eval_command": self.lmms_eval_command(),
                "vlmevalkit_class": self.vlmevalkit_class}


def lmms_eval_command(model_type: str, path: str | Path, *, task: str = "vqav2_val",
                      output: str = "lmms-eval-out") -> str | None:
    """lmms-eval's command line for an export of a `model_type` model at `path`; None when no wrapper loads it."""
    model = LMMS_EVAL_MODELS.get(model_type)
    if not model:
        return None
    return (f"python -m lmms_eval --model {model} --model_args pretrained={path} "
            f"--tasks {task} --batch_size 1 --log_samples --output_path {output}")


def default_output(adapter: str | Path) -> Path:
    """Where an export goes unless told otherwise: `exports/<adapter name>` next to the adapter store (an export
    is not a run, so it stays out of the store that `compare` scans)."""
    from toolkit.paths import adapters_dir

    return adapters_dir().parent / "exports" / Path(adapter).name


def check_output(out: str | Path, adapter: Path, *, overwrite: bool) -> Path:
    """The output folder: new or empty (or replaced with `overwrite`), never the adapter or inside it."""
    if not str(out).strip():
        raise InputError("merged: required (the folder to write the merged model to)")
    out = Path(out).expanduser()
    resolved, inside = out.resolve(), adapter.resolve()
    if resolved == inside or inside in resolved.parents:
        raise InputError(f"merged: '{out}' is the adapter folder or inside it; write the merged model elsewhere")
    if out.exists() and not out.is_dir():
        raise InputError(f"merged: '{out}' is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"merged: '{out}' is not empty; choose a new folder or pass --overwrite")
    return out


def check_export(adapter: str | Path, out: str | Path, *, dtype: str,
                 overwrite: bool) -> tuple[Path, runs.AdapterDoc, Path]:
    """(adapter folder, its cmba.json, output folder), or the one-line InputError `export_merged` would raise
    before loading anything (what the CLI and `queue_export` refuse up front)."""
    from toolkit.evaluation.evaluate import check_adapter_files, read_adapter

    if dtype not in DTYPES:
        raise InputError(f"dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    folder = Path(adapter)
    cmba = read_adapter(folder)
    if cmba.kind == "base":
        raise InputError(f"adapter: '{folder}' is a base-model reference, not an adapter: nothing to merge")
    check_adapter_files(folder)
    return folder, cmba, check_output(out, folder, overwrite=overwrite)


def export_merged(adapter: str | Path, out: str | Path, *, dtype: str = "bf16", overwrite: bool = False,
                  log=lambda m: None) -> ExportResult:
    """Merge `adapter` into its base and save the result, its processor and a README.md to `out`.

    Refused (InputError, one line naming the field) before any model is loaded: an adapter folder that is not a
    complete CMBA adapter with safetensors weights, a base-model reference, an unknown `dtype`, an output folder
    that is not empty (unless `overwrite`) or that is the adapter itself.
    """
    folder, cmba, out = check_export(adapter, out, dtype=dtype, overwrite=overwrite)
    # torch and the model code only once the input is good: a refusal (the CLI's one line) costs no torch import
    import torch

    from toolkit.calculator.structure import load_structure
    from toolkit.evaluation.evaluate import load_adapter
    from toolkit.training.modeling import (
        check_bitsandbytes,
        default_device,
        load_model,
        model_source,
        quiet_libraries,
    )

    quiet_libraries()
    base = cmba.base_model
    structure = load_structure(base.id, revision=base.revision)
    quantize = (cmba.training or runs.TrainingInfo()).quantize
    warnings: list[str] = []
    device = default_device()
    if quantize == "4bit":
        check_bitsandbytes(device)
        warnings.append("the adapter was trained on a 4-bit (nf4) base: the export holds that base dequantized to "
                        f"{dtype} with the LoRA merged in (the model that was trained, not the original 16-bit base "
                        f"weights), at the size of a 16-bit model")
    # fp32 where the merge is checked, the target 16-bit type otherwise (one rounding, as a merge in fp32 then a cast)
    precision = "fp32" if dtype == "fp32" or device.type == "cpu" else dtype
    model, processor = load_model(structure, precision=precision, quantize=quantize, device=device,
                                  revision=base.revision)
    if quantize == "4bit":
        model = model.dequantize()  # nf4 -> float: the weights the LoRA was trained against
    peft_model = load_adapter(model, folder, base.id)
    merged = peft_model.merge_and_unload()
    bad = [n for n, p in merged.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise InputError(f"adapter: merging '{folder}' gives non-finite weights in {bad[0]}; nothing written")
    merged = merged.to({"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype])
    for w in warnings:
        log(f"warning: {w}")

    tmp = out.with_name(f".{out.name}.tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if getattr(merged.config, "quantization_config", None) is not None:
            del merged.config.quantization_config
        merged.save_pretrained(tmp, safe_serialization=True)
        save_processor(processor, tmp, source=model_source(structure)[0], revision=base.revision)
        result = ExportResult(path=str(out.resolve()), adapter=str(folder.resolve()), base_model=base.id,
                              model_type=merged.config.model_type, architecture=type(merged).__name__, dtype=dtype,
                              dequantized=quantize == "4bit", warnings=warnings)
        (tmp / README).write_text(readme(result, cmba), encoding="utf-8")
        if result.vlmevalkit_class:
            (tmp / VLMEVALKIT_CONFIG).write_text(json.dumps(vlmevalkit_config(result), indent=2) + "\n")
        pickles = [p.name for p in tmp.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
        if pickles:  # safetensors only, as everywhere in the toolkit
            raise InputError(f"merged: saving wrote pickle files ({', '.join(pickles)}); nothing exported")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(p.name for p in out.iterdir())
    log(f"merged {folder.name} into {base.id}: {out} ({result.architecture}, {dtype})")
    return ExportResult(**{**result.__dict__, "files": files})


# ------------------------------------------------------------------------------------------ as a background job

def queue_export(*, adapter: str | Path, output: str | Path, dtype: str = "bf16", overwrite: bool = False,
                 store: JobStore | None = None) -> Job:
    """Queue `python -m toolkit export` as one job of the job store (a worker runs it, never the caller); the job.

    Refused up front, with the CLI's one line and nothing queued: what `check_export` refuses, and an export with
    other settings into the same folder that is still queued or running (both would write it). Asking for the same
    export while its job is queued or running returns that job; once it has finished, asking again queues a new one.

        >>> job = queue_export(adapter="adapters/demo-1-4-1-rank8-s0", output="exports/demo-1-4-1")
        >>> ensure_worker()                                    # toolkit.queue.lifecycle: a detached worker runs it
        >>> latest_export("exports/demo-1-4-1").state          # JobState.QUEUED, RUNNING, SUCCEEDED, FAILED, ...
    """
    from toolkit.queue.executor import PYTHON
    from toolkit.queue.gpus import detect_gpus
    from toolkit.queue.store import JobStore, NewJob

    folder, _, out = check_export(adapter, output, dtype=dtype, overwrite=overwrite)
    folder, out = folder.resolve(), out.resolve()  # the worker runs steps from the project root
    settings = {"export": {"adapter": str(folder), "merged": str(out), "dtype": dtype, "overwrite": bool(overwrite)}}
    store = store or JobStore()
    jobs = _export_jobs(out, store)
    for job in jobs:
        if not job.state.finished:
            return _same_export(job, settings)
    step = [PYTHON, "-m", "toolkit", "export", "--adapter", str(folder), "--merged", str(out), "--dtype", dtype]
    # the id numbers the folder's exports: a second identical request racing this one inserts nothing, gets this job
    job = store.submit(NewJob(id=f"{_job_prefix(out)}{len(jobs) + 1}", name=f"export {folder.name}",
                              steps=[step + (["--overwrite"] if overwrite else [])], output_dir=str(out),
                              gpus=1 if detect_gpus() else 0, settings=settings,
                              meta={"kind": "export", "adapter": folder.name, "dtype": dtype}))
    return _same_export(job, settings)


def latest_export(output: str | Path, *, store: JobStore | None = None) -> Job | None:
    """The newest export job writing `output` (any state); None when there is none."""
    from toolkit.paths import jobs_dir
    from toolkit.queue.store import JobStore

    if store is None and not jobs_dir().is_dir():  # no job has been queued here: read nothing, create nothing
        return None
    jobs = _export_jobs(Path(output).expanduser().resolve(), store or JobStore())
    return jobs[-1] if jobs else None


def _job_prefix(out: Path) -> str:
    return f"export-{hashlib.sha256(str(out).encode()).hexdigest()[:10]}-"


def _export_jobs(out: Path, store: JobStore) -> list[Job]:
    prefix = _job_prefix(out)
    return [j for j in store.list() if j.id.startswith(prefix)]


def _same_export(job: Job, settings: dict) -> Job:
    if job.settings != settings:
        other = job.settings.get("export", {})
        raise InputError(f"merged: job {job.id} ({job.state.value}) is already exporting {other.get('adapter')} "
                         f"({other.get('dtype')}) to '{other.get('merged')}'; wait for it or cancel it "
                         f"(python -m toolkit jobs cancel {job.id})")
    return job


def export_notes(folder: str | Path) -> tuple[str | None, list[str]]:
    """(lmms-eval's command line or None, the warnings) of a finished export, read back from what `export_merged`
    wrote there (config.json's model_type, README.md's warnings): what the Publish page shows after the job."""
    folder = Path(folder)
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", "")
        text = (folder / README).read_text(encoding="utf-8")
    except (OSError, ValueError):
        raise InputError(f"merged: '{folder}' no longer holds a complete export (config.json, {README})") from None
    warnings = [line.removeprefix(WARNING).removesuffix(".") for line in text.splitlines() if line.startswith(WARNING)]
    return lmms_eval_command(model_type, str(folder)), warnings


def save_processor(processor, folder: Path, *, source: str, revision: str | None = None) -> None:
    """`save_pretrained`; a processor built without its video part (no torchvision here) is saved part by part,
    with the processor's own settings and the base's video processor config copied, so that
    `AutoProcessor.from_pretrained` reads the folder as the base's wherever torchvision is installed."""
    if getattr(processor, "video_processor", True) is not None:
        processor.save_pretrained(folder)
        return
    from transformers.utils import cached_file

    video = cached_file(source, VIDEO_CONFIG, revision=revision, _raise_exceptions_for_missing_entries=False)
    if video:
        shutil.copyfile(video, folder / VIDEO_CONFIG)
    processor.image_processor.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    if getattr(processor, "chat_template", None):
        (folder / "chat_template.jinja").write_text(processor.chat_template, encoding="utf-8")
    settings = {"processor_class": type(processor).__name__}
    for key, value in vars(processor).items():  # scalar settings such as image_seq_len
        if key not in ("chat_template", "audio_tokenizer") and isinstance(value, int | float | str | bool) \
                and not key.startswith("_") and not key.endswith("_token") and not key.endswith("_token_id"):
            settings[key] = value
    (folder / "processor_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def vlmevalkit_config(result: ExportResult, dataset: str = "TextVQA_VAL") -> dict:
    """VLMEvalKit's `--config` file (docs/en/ConfigSystem.md): this export as a model, one dataset."""
    name = Path(result.path).name
    return {"model": {name: {"class": result.vlmevalkit_class, "model_path": result.path}}, "data": {dataset: {}}}


def readme(result: ExportResult, cmba: runs.AdapterDoc) -> str:
    """README.md of the export: what it is and the exact command lines of both harnesses."""
    alloc = cmba.allocation or runs.AllocationInfo()
    ratio = ":".join(f"{w:g}" for w in alloc.ratio or []) or "?"
    total = f"{alloc.total:,}" if alloc.total is not None else "?"
    lines = [f"# {Path(result.adapter).name}, merged", "",
             f"The CMBA adapter `{result.adapter}` (ratio {ratio}, {total} trainable parameters) "
             f"merged into `{result.base_model}` with PEFT's `merge_and_unload`, saved as {result.dtype} safetensors. "
             f"It loads as the base family's own class, `{result.architecture}.from_pretrained(\"{result.path}\")`, "
             "with the base's processor (AutoProcessor).", ""]
    lines += [f"{WARNING}{w}." for w in result.warnings] + ([""] if result.warnings else [])
    lines += ["## lmms-eval (0.7.x)", ""]
    if result.lmms_eval_model:
        lines += ["```bash", result.lmms_eval_command("vqav2_val"), "```", "",
                  "Then bring the per-sample outputs back next to the adapter, so `compare` pools them by seed and "
                  "resamples questions on one image together (lmms-eval 0.4+ does not log the question ids: "
                  "`--dataset` names the split the task read, and `doc_id` is the row in it):", "",
                  "```bash",
                  f"python -m toolkit import-eval --adapter {result.adapter} --dataset lmms-lab/VQAv2 --split validation "
                  "lmms-eval-out/*/*_samples_vqav2_val.jsonl",
                  "python -m toolkit compare --dataset lmms-eval__vqav2_val__n<N>", "```", ""]
    else:
        lines += [f"lmms-eval 0.7.x has no wrapper for `{result.model_type}` models: its generic `huggingface` "
                  "wrapper applies the processor's chat template, which this family's processor does not have.", ""]
    lines += ["## VLMEvalKit", ""]
    if result.vlmevalkit_class:
        lines += [f"`{VLMEVALKIT_CONFIG}` (in this folder) names this export as a `{result.vlmevalkit_class}` model "
                  "(choose your datasets in its `data`):", "", "```bash",
                  f"python run.py --config {result.path}/{VLMEVALKIT_CONFIG}", "```", ""]
    else:
        lines += [f"VLMEvalKit has no class that loads a `{result.model_type}` checkpoint from a path.", ""]
    return "\n".join(lines)
