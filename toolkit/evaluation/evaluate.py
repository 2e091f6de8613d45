"""Evaluate an adapter (or the bare base model) on a VQA split with the official VQA accuracy.

    >>> doc = evaluate_adapter("adapters/demo-1-4-1-rank8-s0", "synthetic:shapes?n=500", split="validation")
    >>> doc["scores"]["overall"], doc["scores"]["per_answer_type"]
    >>> evaluate_base("demo", "synthetic:shapes?n=500", split="validation")   # the reference row

Generation is batched and greedy (left-padded prompts, `max_new_tokens` short), with the adapter loaded by
PEFT and not merged, after exactly the training prompt (toolkit.data.prompting). The generated text is
stripped and scored raw by toolkit.evaluation.scoring, which applies the official normalisation to both sides
only when the human answers disagree (a unanimous "t-shirt" is matched by "t-shirt", not by "t shirt");
predictions.jsonl keeps the scored answer (`prediction`), its normalised form for display
(`normalized_prediction`) and the generated text (`raw_prediction`). Results go next to the adapter, atomically:

    <adapter>/eval/<tag>/results.json       scores, dataset (id, split, subset, n), settings, timing
    <adapter>/eval/<tag>/predictions.jsonl  one line per question: prediction, human answers, accuracy

`<tag>` names the evaluated set: `<dataset-slug>__<split>__n<N>`. The base model's reference evaluation is
stored the same way in `adapters/base--<model>/` (cmba.json with "kind": "base").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from toolkit import runs
from toolkit.errors import InputError
from toolkit.progressbar import Bar

FORMAT = runs.EVAL_FORMAT


def eval_tag(info: dict) -> str:
    """`<dataset-slug>__<split>__n<N>[__s<sample seed>]`: which questions were evaluated."""
    source = Path(info["id"]).name if info["kind"] != "synthetic" and Path(info["id"]).exists() else info["id"]
    slug = runs.slug(source, keep="", limit=60, empty="data")
    seed = f"__s{info['sample_seed']}" if info.get("sample_seed") else ""
    held = f"__holdout{info['holdout']:g}" if info.get("holdout") else ""
    return f"{slug}__{info['split']}__n{info['size']}{seed}{held}"


def load_eval_data(dataset: str, *, split, limit, columns, image_dir, sample_seed, holdout=None,
                   images_anywhere: bool = False):
    """The evaluated records: with `holdout`, only the held-out images' part of the split."""
    from toolkit.data.sources import load_vqa

    return load_vqa(dataset, split=split, limit=limit, columns=columns or {}, image_dir=image_dir,
                    sample_seed=sample_seed, holdout=holdout, part="holdout" if holdout else "train",
                    images_anywhere=images_anywhere)


def check_writable(folder: Path, field: str = "adapter") -> None:
    """Refuse before the evaluation runs, not after it, when its results could not be written."""
    import tempfile

    probe = Path(folder) / "eval"
    while not probe.exists() and probe != probe.parent:  # the nearest folder that exists: nothing is created
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, f"'{probe}' is a file")
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".probe-"):
            pass
    except OSError as exc:
        raise InputError(f"{field}: cannot write the results under '{folder}' ({exc.strerror or exc}); "
                         f"make it writable or evaluate a copy") from None


def check_adapter_files(folder: Path) -> None:
    """adapter_config.json is a LoRA config and the weights are a complete safetensors file (nothing loaded)."""
    from toolkit import tensorfile

    config = runs.read_json(folder / runs.ADAPTER_CONFIG, label="adapter")
    if config.get("peft_type") != "LORA" or not config.get("target_modules") or not isinstance(config.get("r"), int):
        raise InputError(f"adapter: '{folder / runs.ADAPTER_CONFIG}' is not a LoRA adapter config "
                         f"(needs peft_type LORA, target_modules and an integer r)")
    tensorfile.check(folder / runs.ADAPTER_WEIGHTS, label="adapter")


def load_adapter(model, folder: Path, base_id: str):
    """PeftModel over `model`, or one line when the adapter does not fit this base model."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"adapter: '{folder}' does not load onto its base model {base_id} ({first})") from None


def check_hygiene(folder: Path, data, *, allow_contaminated: bool) -> dict:
    """Refuse (InputError) an evaluation that overlaps what the adapter trained on, or mark it contaminated."""
    from toolkit.data.hygiene import TrainedOn, check_clean, overlap

    text = runs.read_trained_on(folder)
    if text is None:
        return {"checked": False, "contaminated": None,
                "note": "the adapter records no training ids (trained before they were recorded): overlap not checked"}
    found = overlap(TrainedOn.from_json(text), data.identities())
    note = check_clean(found, allow_contaminated=allow_contaminated)
    return {"checked": True, **found.to_dict(), "note": note}


def read_adapter(folder) -> runs.AdapterDoc:
    """cmba.json of a complete adapter folder, or a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"adapter: '{folder}' is not a folder")
    doc = runs.read_adapter_doc(folder)
    if doc.kind == "adapter" and not runs.has_weights(folder):
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
        extra = f" (found {', '.join(pickles)}: pickle files are not loaded)" if pickles else ""
        raise InputError(f"adapter: '{folder}' has no adapter_model.safetensors{extra}")
    if not doc.base_model.id:
        raise InputError(f"adapter: '{folder / runs.ADAPTER_DOC}' names no base model (base_model.id)")
    return doc


def generate_answers(model, fmt, records, *, batch_size: int, max_new_tokens: int, device, progress=None,
                     used: dict | None = None) -> list[str]:
    """Greedy answers for `records`, up to `batch_size` questions per `generate` call, with the KV cache on.

    A batch that does not fit in GPU memory is retried at half the size (down to 1), and the rest of the run keeps
    that size; `used["batch_size"]` receives the size that ran.
    """
    import torch

    tok = fmt.tokenizer
    answers: list[str] = []
    size = batch_size
    while len(answers) < len(records):
        chunk = records[len(answers):len(answers) + size]
        batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in fmt.generation_batch(chunk).items()}
        try:
            with torch.inference_mode():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                     use_cache=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            del batch
            torch.cuda.empty_cache()
            size //= 2
            continue
        answers.extend(fmt.decode(out, batch))
        if progress:
            progress(len(answers), len(records))
    if used is not None:
        used["batch_size"] = size
    return answers


def _store(folder: Path, tag: str, adapter, base_model, dataset_doc, settings, scores, predictions, elapsed) -> dict:
    """results.json + predictions.jsonl of one evaluation, written atomically; returns results (with its path)."""
    result = runs.EvalResult(adapter=adapter, base_model=base_model, dataset=dataset_doc, settings=settings,
                             scores=scores, eval_time_s=round(elapsed, 3),
                             questions_per_s=round(len(predictions) / elapsed, 3) if elapsed else None,
                             created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    path = runs.write_evaluation(folder, tag, result=result, predictions=[runs.Prediction(**p) for p in predictions])
    return {**result.to_dict(), "path": str(path)}


def score_answers(*, records, raw: list[str]) -> tuple[dict, list[dict]]:
    """(scores, predictions.jsonl lines) of the generated answers `raw` to the VQA `records`, by the official rules.

    The scorer gets the raw answer, only stripped: the official evaluation normalises both sides only when the
    human answers disagree, so a unanimous "t-shirt" is matched by "t-shirt" (normalised, "t shirt" would
    score 0). The normalised form is stored for display only.

        >>> scores, preds = score_answers(records=records, raw=["t-shirt", "2"])
        >>> preds[0]["prediction"], preds[0]["normalized_prediction"], preds[0]["accuracy"]
        ('t-shirt', 't shirt', 1.0)
    """
    from toolkit.evaluation.scoring import normalize_answer, score

    stripped = [a.strip() for a in raw]
    annotations = [{"question_id": r.question_id, "answers": r.answers, "answer_type": r.answer_type,
                    "question_type": r.question_type} for r in records]
    scores = score({r.question_id: a for r, a in zip(records, stripped)}, annotations)
    per_q = scores.pop("per_question")
    scores.pop("skipped", None)
    predictions = [{"question_id": r.question_id, "question": r.question, "prediction": a,
                    "normalized_prediction": normalize_answer(a), "raw_prediction": raw_a, "answers": r.answers,
                    "answer_type": r.answer_type, "question_type": r.question_type, "accuracy": per_q[r.question_id],
                    "image_id": None if r.image_id is None else str(r.image_id)}
                   for r, a, raw_a in zip(records, stripped, raw)]
    return scores, predictions


def _run(model, processor, *, data, batch_size, max_new_tokens, device, log):
    from toolkit.data.prompting import VQAFormatter

    records = list(data)
    fmt = VQAFormatter.for_model(processor, model)
    model.eval()
    t0 = time.perf_counter()
    used = {}
    with Bar(total=len(records), desc="evaluate", unit="question", every=None, every_s=5, log=log,
             line=lambda done, total, _: f"evaluated {done}/{total} questions") as bar:
        raw = generate_answers(model, fmt, records, batch_size=batch_size, max_new_tokens=max_new_tokens,
                               device=device, progress=lambda done, total: bar.update(done - bar.done), used=used)
    elapsed = time.perf_counter() - t0
    log(f"{len(records)} questions in {elapsed:.1f} s ({len(records) / elapsed:.2f} questions/s, batch size "
        f"{used['batch_size']})" if elapsed > 0 else f"{len(records)} questions")
    scores, predictions = score_answers(records=records, raw=raw)
    info = data.info.to_dict()
    settings = {"max_new_tokens": max_new_tokens, "batch_size": used["batch_size"], "decoding": "greedy",
                "prompt": fmt.prompt("{question}"), "answer_cleaning": "stripped; official VQA rules",
                "device": device.type, **({"batch_size_requested": batch_size} if used["batch_size"] != batch_size else {})}
    dataset_doc = {"id": info["id"], "split": info["split"], "limit": info["limit"], "n": info["size"],
                   "source_size": info["source_size"], "revision": info["revision"], "sample_seed": info["sample_seed"],
                   "holdout": info.get("holdout"), "part": info.get("part")}
    return eval_tag(info), scores, predictions, dataset_doc, settings, elapsed


@dataclass
class AdapterEvaluation:
    """An adapter's evaluation checked and ready to run (`prepare_adapter_evaluation`): nothing loaded but the data."""

    folder: Path
    doc: runs.AdapterDoc
    """its cmba.json"""
    data: object
    """the evaluated records (toolkit.data.sources)"""
    hygiene: dict
    tag: str
    """where its results go: eval/<tag>/ (`__contaminated` added when it overlaps the training data)"""
    batch_size: int
    max_new_tokens: int

    @property
    def quantize(self) -> str | None:
        return (self.doc.training or runs.TrainingInfo()).quantize

    def done(self) -> bool:
        """Its results are already written (results.json of its tag reads back)."""
        try:
            runs.read_evaluation(self.folder, self.tag)
        except (InputError, OSError):
            return False
        return True


def prepare_adapter_evaluation(adapter, dataset: str, *, split: str = "validation", limit: int | None = None,
                               columns: dict | None = None, image_dir: str | None = None, sample_seed: int = 0,
                               batch_size: int = 32, max_new_tokens: int = 10, holdout: float | None = None,
                               allow_contaminated: bool = False, images_anywhere: bool = False) -> AdapterEvaluation:
    """Everything `evaluate_adapter` checks before it loads a model: the folder, its files, the questions, the
    overlap with its training data (InputError on any problem)."""
    _check_settings(batch_size, max_new_tokens)
    folder = Path(adapter)
    cmba = read_adapter(folder)
    if cmba.kind == "base":
        raise InputError(f"adapter: '{folder}' is a base-model reference, not an adapter (use --base)")
    check_adapter_files(folder)
    check_writable(folder)
    data = load_eval_data(dataset, split=split, limit=limit, columns=columns, image_dir=image_dir,
                          sample_seed=sample_seed, holdout=holdout, images_anywhere=images_anywhere)
    hygiene = check_hygiene(folder, data, allow_contaminated=allow_contaminated)
    tag = eval_tag(data.info.to_dict()) + ("__contaminated" if hygiene.get("contaminated") else "")
    return AdapterEvaluation(folder=folder, doc=cmba, data=data, hygiene=hygiene, tag=tag, batch_size=batch_size,
                             max_new_tokens=max_new_tokens)


def load_base_for(prepared: AdapterEvaluation):
    """(model, processor, precision, device): the adapter's base model loaded as `evaluate_adapter` loads it
    (precision "auto" on this device, the quantization the adapter was trained under)."""
    from toolkit.calculator.structure import load_structure
    from toolkit.training.modeling import default_device, load_model, quiet_libraries, resolve_precision

    quiet_libraries()
    base = prepared.doc.base_model
    structure = load_structure(base.id, revision=base.revision)
    device = default_device()
    precision = resolve_precision("auto", device)
    model, processor = load_model(structure, precision=precision, quantize=prepared.quantize, device=device,
                                  revision=base.revision)
    return model, processor, precision, device


def evaluate_prepared(model, processor, prepared: AdapterEvaluation, *, precision: str, device,
                      log=lambda m: None) -> dict:
    """Evaluate a prepared adapter on an already loaded base `model` (as `load_base_for` loads it: no adapter on
    it) and store the results; the adapter is loaded onto `model` by PEFT for the evaluation and taken off after,
    so the same base serves the next adapter (`model` itself is left as it was given)."""
    peft_model = load_adapter(model, prepared.folder, prepared.doc.base_model.id)
    try:
        return evaluate_loaded(peft_model, processor, prepared, precision=precision, device=device, log=log)
    finally:
        peft_model.unload()  # the LoRA layers replaced by their base layers again: `model` is the bare base


def evaluate_loaded(peft_model, processor, prepared: AdapterEvaluation, *, precision: str, device,
                    log=lambda m: None) -> dict:
    """Evaluate `peft_model`, a PEFT model whose active adapter holds the prepared adapter's weights (loaded from
    its folder, or the live adapter of a pack at a rung, toolkit.study.packrun), in eval mode; store the results
    in the prepared adapter's folder and return them."""
    from toolkit.training.modeling import quantization_doc

    base = prepared.doc.base_model
    tag, scores, predictions, dataset_doc, settings, elapsed = _run(
        peft_model, processor, data=prepared.data, batch_size=prepared.batch_size,
        max_new_tokens=prepared.max_new_tokens, device=device, log=log)
    quantize = prepared.quantize
    settings.update(precision=precision, quantize=quantize, quantization=quantization_doc(quantize))
    dataset_doc["hygiene"] = prepared.hygiene
    if prepared.hygiene.get("contaminated"):
        tag += "__contaminated"
        log(prepared.hygiene["note"])
    return _store(prepared.folder, tag, prepared.doc.name, base.id, dataset_doc, settings, scores, predictions,
                  elapsed)


def evaluate_adapter(adapter, dataset: str, *, split: str = "validation", limit: int | None = None,
                     columns: dict | None = None, image_dir: str | None = None, sample_seed: int = 0,
                     batch_size: int = 32, max_new_tokens: int = 10, holdout: float | None = None,
                     allow_contaminated: bool = False, images_anywhere: bool = False, log=lambda m: None) -> dict:
    """Evaluate a trained adapter (unmerged PEFT) and store the results next to it.

    Refused (InputError) before any model is loaded when the evaluated questions or images overlap what the
    adapter trained on; with `allow_contaminated` it runs and the result is marked (its tag ends `__contaminated`).
    The three parts, for a caller that evaluates several adapters on one loaded base (`python -m toolkit pack`):
    `prepare_adapter_evaluation`, `load_base_for`, `evaluate_prepared`.
    """
    prepared = prepare_adapter_evaluation(adapter, dataset, split=split, limit=limit, columns=columns,
                                          image_dir=image_dir, sample_seed=sample_seed, batch_size=batch_size,
                                          max_new_tokens=max_new_tokens, holdout=holdout,
                                          allow_contaminated=allow_contaminated, images_anywhere=images_anywhere)
    model, processor, precision, device = load_base_for(prepared)
    return evaluate_prepared(model, processor, prepared, precision=precision, device=device, log=log)


def base_folder(model: str) -> Path:
    """`adapters/base--<model>/`: where the base model's reference evaluations are stored."""
    from toolkit.paths import adapters_dir

    return runs.base_folder(model, root=adapters_dir())


def evaluate_base(model: str, dataset: str, *, revision: str | None = None, split: str = "validation",
                  limit: int | None = None, columns: dict | None = None, image_dir: str | None = None,
                  sample_seed: int = 0, batch_size: int = 32, max_new_tokens: int = 10, holdout: float | None = None,
                  quantize: str | None = None, images_anywhere: bool = False, log=lambda m: None) -> dict:
    """Evaluate the base model without an adapter: the reference row of a comparison (with `quantize`, under the
    same 4-bit quantization as the adapters it is compared with; its tag then ends `__4bit`)."""
    from toolkit.calculator.structure import load_structure
    from toolkit.training.modeling import (
        default_device,
        load_model,
        model_source,
        quantization_doc,
        quiet_libraries,
        resolve_precision,
    )

    _check_settings(batch_size, max_new_tokens)
    quiet_libraries()
    structure = load_structure(model, revision=revision)
    check_writable(base_folder(model), field="adapters-dir")
    device = default_device()
    precision = resolve_precision("auto", device)
    data = load_eval_data(dataset, split=split, limit=limit, columns=columns, image_dir=image_dir,
                          sample_seed=sample_seed, holdout=holdout, images_anywhere=images_anywhere)
    if quantize == "4bit":
        from toolkit.training.modeling import check_bitsandbytes

        check_bitsandbytes(device)
    loaded, processor = load_model(structure, precision=precision, quantize=quantize, device=device, revision=revision)
    tag, scores, predictions, dataset_doc, settings, elapsed = _run(
        loaded, processor, data=data, batch_size=batch_size, max_new_tokens=max_new_tokens,
        device=device, log=log)
    if quantize:
        tag += f"__{quantize}"
    folder = base_folder(model)
    folder.mkdir(parents=True, exist_ok=True)
    _, hub_id = model_source(structure)
    runs.write_adapter_doc(folder, runs.AdapterDoc(kind="base", name=folder.name, base_model={
        "id": model, "hub_id": hub_id, "revision": revision, "model_type": structure.model_type}))
    settings.update(precision=precision, quantize=quantize, quantization=quantization_doc(quantize))
    return _store(folder, tag, None, model, dataset_doc, settings, scores, predictions, elapsed)


def _check_settings(batch_size, max_new_tokens) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch-size: must be a whole number >= 1, got {batch_size}")
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 512:
        raise InputError(f"max-new-tokens: must be a whole number in [1, 512], got {max_new_tokens}")
