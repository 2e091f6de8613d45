"""The model card (README.md) of a published adapter, built from its `cmba.json` and evaluation results.

    >>> from toolkit.hub.modelcard import build_card
    >>> card = build_card("adapters/llava-1-4-1-s0", repo_id="alice/llava-1-4-1", license="apache-2.0")
    >>> card.data.library_name, card.data.pipeline_tag
    ('peft', 'image-text-to-text')
    >>> print(card.content)          # YAML metadata + Markdown body, what `push` uploads as README.md

The card is a `huggingface_hub.ModelCard` whose metadata is a `ModelCardData`. Only what is true goes in:
`base_model` only when the base is a Hub id (the offline demo and local folders are said so in the text),
`datasets` only for Hub datasets, `model-index` only from evaluation results on disk, with the evaluated
split and subset named as they were ("validation, subset of 500 questions"), never a benchmark split that was
not used. Without evaluation results the card says "not evaluated". `check_card` parses the rendered card
back offline (no call to the Hub's validator).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from toolkit import runs
from toolkit.errors import InputError
from toolkit.hub.studycard import study_section

COMPONENTS = ("vision", "projector", "language")

HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0",
    "odc-by", "odbl", "openmdw-1.0", "openmdw-1.1", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa",
    "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license",
    "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "grok2-community", "gemma", "unknown", "other",
)
"""license identifiers the Hub accepts in card metadata (https://huggingface.co/docs/hub/repositories-licenses)"""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate_license(license: str | None) -> str | None:
    """The license id, lower-cased, or None when not given; InputError if the Hub would not know it."""
    if license is None or not str(license).strip():
        return None
    value = str(license).strip().lower()
    if value not in HUB_LICENSES:
        raise InputError(f"license: '{license}' is not a Hub license id; use one of apache-2.0, mit, cc-by-4.0, "
                         f"llama3, gemma, other, ... (https://huggingface.co/docs/hub/repositories-licenses)")
    return value


def eval_results(adapter_dir: str | Path) -> list[tuple[str, dict]]:
    """(tag, results) of every evaluation under `adapter_dir/eval/`, sorted by tag (InputError if one is damaged)."""
    return [(tag, runs.read_evaluation(adapter_dir, tag).to_dict()) for tag in runs.evaluations(adapter_dir)]


def is_hub_id(text: str | None) -> bool:
    """Whether `text` looks like a Hub repo id ("namespace/name") rather than a preset, path or `synthetic:`."""
    return bool(text) and _HUB_ID.fullmatch(text) is not None and not Path(text).exists()


def split_description(dataset: dict, scores: dict) -> str:
    """How much of which split was evaluated, in words: 'validation split, subset of 500 questions'."""
    split = dataset.get("split") or "unknown"
    n = scores.get("n") or dataset.get("n")
    if dataset.get("limit"):
        return f"{split} split, subset of {n or dataset['limit']} questions"
    return f"{split} split, all {n} questions" if n else f"{split} split"


def _pct(x) -> str:
    return "–" if x is None else f"{float(x):.2f}"


def _share(x) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def _base(meta: runs.AdapterDoc) -> tuple[str | None, str]:
    """(Hub id or None, how to name the base model in text)."""
    base = meta.base_model
    hub_id = base.hub_id or (base.id if is_hub_id(base.id) else None)
    if hub_id:
        rev = f" (revision `{base.revision}`)" if base.revision else ""
        return hub_id, f"[`{hub_id}`](https://huggingface.co/{hub_id}){rev}"
    ident = base.id or "unknown"
    if ident == "demo":
        return None, ("the CMBA Toolkit offline demo model (preset `demo`, a tiny VLM built from a bundled config; "
                      "it is not on the Hub)")
    shown = Path(ident).name or ident  # a local folder: its name only, not the publisher's file system layout
    return None, f"`{shown}` (a local model, not a Hub id: the base model is not published with this card)"


def _allocation_section(alloc: runs.AllocationInfo | None) -> list[str]:
    if not alloc or not alloc.to_dict():
        return ["## Allocation", "", "No allocation recorded in cmba.json.", ""]
    ratio = ":".join(f"{w:g}" for w in alloc.ratio or [])
    achieved = ":".join(f"{w:g}" for w in alloc.achieved_ratio or [])
    lines = ["## Allocation", "",
             f"LoRA budget split vision : projector : language = **{ratio}** ({alloc.mode or '?'} mode).", ""]
    if alloc.budget is not None:
        lines.append(f"- Budget: {alloc.budget:,} parameters ({alloc.budget_spec or ''}); allocated "
                     f"{alloc.total or 0:,} (error {alloc.budget_error or 0:+.2f}%)")
    else:
        lines.append(f"- Allocated: {alloc.total or 0:,} parameters")
    rule = alloc.alpha_rule or {}
    rounding = alloc.rounding or "uniform"
    lines += [f"- Achieved ratio: {achieved} (of mean ranks)", f"- Alpha rule: {rule.get('rule', '?')} ({rule.get('value', '')})",
              f"- Rounding: {rounding}" + (" (each component's modules mix two neighbouring ranks so the budget is met; "
                                           "`rank` is the nearest whole rank, `mean rank` the modules' cost-weighted mean, what the ratio is kept on)"
                                           if rounding == "mixed" else " (one integer rank per component)"), "",
              "| component | rank | mean rank | alpha | modules | LoRA params | share of budget | share of model |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in COMPONENTS:
        x = (alloc.components or {}).get(c)
        if x is None:
            continue
        mean = x.get("mean_rank", x.get("rank"))
        lines.append(f"| {c} | {x.get('rank')} | {mean:g} | {x.get('alpha', 0):g} | {x.get('modules')} | {x.get('params', 0):,} | "
                     f"{_share(x.get('share_of_budget'))} | {_share(x.get('share_of_model'))} |")
    lines += ["", "Share of model = the component's share of the base model's vision + projector + language "
              "parameters; a share of budget above it means the component gets more LoRA than its size.", ""]
    lines += [f"- warning: {w}" for w in alloc.warnings or []]
    return lines + ([""] if alloc.warnings else [])


def _eval_section(results: list[tuple[str, dict]]) -> list[str]:
    lines = ["## Evaluation", ""]
    if not results:
        return lines + ["Not evaluated: this adapter has no evaluation results, so no accuracy is claimed.", ""]
    for tag, r in results:
        ds, scores = r.get("dataset") or {}, r.get("scores") or {}
        lines += [f"### `{ds.get('id', '?')}` — {split_description(ds, scores)}", "",
                  f"VQA accuracy (official VQAv2 metric, greedy decoding): **{_pct(scores.get('overall'))}%** "
                  f"on {scores.get('n', '?')} questions. This is not a test-dev or leaderboard score.", ""]
        per_type = scores.get("per_answer_type") or {}
        if per_type:
            lines += ["| answer type | accuracy (%) |", "|---|---:|"]
            lines += [f"| {t} | {_pct(v)} |" for t, v in sorted(per_type.items())]
            lines.append("")
        settings = r.get("settings") or {}
        if settings:
            lines.append("Settings: " + ", ".join(f"{k} = `{v}`" for k, v in settings.items() if v is not None) + f" (results in "
                         f"`eval/{tag}/results.json`).")
            lines.append("")
    return lines


def _retrieval_section(adapter_dir) -> list[str]:
    """Image-text retrieval (the alignment metric, toolkit.evaluation.retrieval) when it was measured."""
    from toolkit import runs

    found = runs.read_retrievals(adapter_dir)
    if not found:
        return []
    lines = ["### Cross-modal alignment: image-text retrieval", "",
             "Every caption scored against every image by the mean log-likelihood of the caption after the image.", "",
             "| set | direction | R@1 | R@5 | R@10 |", "|---|---|---:|---:|---:|"]
    for tag, doc in found.items():
        for direction, recall in doc["recall"].items():
            lines.append(f"| `{tag}` | {direction.replace('_', ' ')} | "
                         + " | ".join(_pct(recall.get(k)) for k in ("R@1", "R@5", "R@10")) + " |")
    return lines + [""]


def _training_section(meta: runs.AdapterDoc) -> list[str]:
    training = meta.training.to_dict() if meta.training else {}
    dataset, result = meta.dataset, meta.result
    lines = ["## Training", ""]
    if dataset and dataset.to_dict():
        where = "built-in synthetic data" if str(dataset.id or "").startswith("synthetic:") else "dataset"
        lines.append(f"- Data: {where} `{dataset.id}`, split `{dataset.split}`, {dataset.size} "
                     f"examples" + (f" (limit {dataset.limit})" if dataset.limit else "")
                     + (f", revision `{dataset.revision}`" if dataset.revision else ""))
    if result and result.to_dict():
        loss = result.final_loss
        lines.append(f"- Result: {result.steps} steps in {float(result.train_time_s or 0):.0f} s, "
                     f"final training loss {'–' if loss is None else f'{float(loss):.4f}'}")
        if result.no_gradient_modules:
            lines.append(f"- Modules that received no gradient: {len(result.no_gradient_modules)}")
    if training:
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(v) if isinstance(v, (dict, list)) else v}` |" for k, v in training.items()
                  if v is not None]  # unset settings (epochs when max_steps is given, no quantization) are left out
    return lines + [""]


def _load_section(repo_id: str | None, hub_id: str | None, base_text: str) -> list[str]:
    repo = repo_id or "<namespace>/<name>"
    if hub_id:
        base = [f'base = AutoModelForImageTextToText.from_pretrained("{hub_id}")']
    else:
        base = [f"# the base model is {base_text.split(' (')[0]}: load that same model here",
                "base = ...  # an AutoModelForImageTextToText instance"]
    return ["## How to load", "", "```python", "from peft import PeftModel",
            "from transformers import AutoModelForImageTextToText", "", *base,
            "# the LoRA stays unmerged; model.merge_and_unload() merges it into the base weights",
            f'model = PeftModel.from_pretrained(base, "{repo}")',
            "```", ""]


def _provenance_section(meta: runs.AdapterDoc, base_text: str) -> list[str]:
    versions = meta.versions or {}
    lines = ["## Provenance", "", f"- Adapter `{meta.name}`, created {meta.created}, format "
             f"`{meta.format}`", f"- Base model: {base_text}"]
    if versions:
        lines.append("- Package versions at training time: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append("- Files: `adapter_config.json` + `adapter_model.safetensors` (PEFT), `cmba.json` (allocation, "
                 "hyper-parameters, provenance), `metrics.jsonl` and `eval/` when present. Safetensors only.")
    return lines + [""]


def _largest_per_split(results: list[tuple[str, dict]]) -> list[dict]:
    """One evaluation per (dataset, split, revision) for model-index, the one on most questions.

    The Hub merges model-index entries with the same task, dataset, split and revision, so two evaluations of
    one split (say 50 and 5000 questions) would end up under one name; the text lists all of them.
    """
    best: dict[tuple, dict] = {}
    for _, r in results:
        ds = r.get("dataset") or {}
        key = (ds.get("id"), ds.get("split"), ds.get("revision"))
        n = (r.get("scores") or {}).get("n") or 0
        if key not in best or n > ((best[key].get("scores") or {}).get("n") or 0):
            best[key] = r
    return list(best.values())


def build_card(adapter_dir: str | Path, *, repo_id: str | None = None, license: str | None = None):
    """The `huggingface_hub.ModelCard` of an adapter folder (needs its cmba.json)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    adapter_dir = Path(adapter_dir)
    meta = runs.read_adapter_doc(adapter_dir)
    license = validate_license(license)
    alloc = meta.allocation or runs.AllocationInfo()
    hub_id, base_text = _base(meta)
    results = eval_results(adapter_dir)
    family = alloc.family or meta.base_model.model_type
    ratio_tag = "-".join(f"{w:g}" for w in alloc.ratio or []).replace(".", "_")
    tags = ["peft", "lora", "cmba", "vision-language"] + [t for t in (family, f"cmba-ratio-{ratio_tag}" if ratio_tag else None) if t]
    trained_on = (meta.dataset or runs.DatasetInfo()).id
    datasets = sorted({d for d in [trained_on] + [(r.get("dataset") or {}).get("id") for _, r in results]
                       if is_hub_id(d)})
    name = repo_id.split("/")[-1] if repo_id else meta.name
    evals = []
    for r in _largest_per_split(results):
        ds, scores = r.get("dataset") or {}, r.get("scores") or {}
        common = dict(task_type="visual-question-answering", task_name="Visual Question Answering",
                      dataset_type=ds.get("id", "unknown"), dataset_name=f"{ds.get('id')} ({split_description(ds, scores)})",
                      dataset_split=ds.get("split"), dataset_revision=ds.get("revision"), metric_type="accuracy")
        evals.append(EvalResult(**common, metric_name="VQA accuracy", metric_value=round(float(scores["overall"]), 2)))
        for t, v in sorted((scores.get("per_answer_type") or {}).items()):
            evals.append(EvalResult(**common, metric_name=f"VQA accuracy ({t})", metric_value=round(float(v), 2)))
    data = ModelCardData(base_model=hub_id, library_name="peft", pipeline_tag="image-text-to-text", license=license,
                         datasets=datasets or None, tags=tags, model_name=name if evals else None,
                         eval_results=evals or None)
    ratio = ":".join(f"{w:g}" for w in alloc.ratio or []) or "?"
    body = [f"# {name}", "",
            f"A LoRA adapter for {base_text}, trained with CMBA Toolkit's cross-modal budget "
            f"allocation: the LoRA parameter budget is split vision : projector : language = {ratio}.",
            f"License: `{license}`." if license else "License: not specified by the publisher.", "",
            *_allocation_section(meta.allocation), *_eval_section(results), *study_section(adapter_dir),
            *_retrieval_section(adapter_dir),
            *_training_section(meta),
            *_load_section(repo_id, hub_id, base_text), *_provenance_section(meta, base_text)]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
    return ModelCard(content)


def render_card(adapter_dir: str | Path, *, repo_id: str | None = None, license: str | None = None) -> str:
    """The README.md text of an adapter (checked with `check_card`)."""
    content = build_card(adapter_dir, repo_id=repo_id, license=license).content
    check_card(content)
    return content


def check_card(content: str) -> dict:
    """Parse a card offline the way the Hub client does; return its metadata or raise ValueError.

    The YAML block must be a mapping, must survive `ModelCard(content)` -> `content` unchanged, and its
    `model-index` must convert to eval results (huggingface_hub raises on a malformed one).
    """
    import yaml
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(content)
    if not match:
        raise ValueError("model card: no YAML metadata block")
    raw = yaml.safe_load(match.group(2))
    card = ModelCard(content)  # raises on a non-dict block or a malformed model-index
    if card.data.to_dict() != raw:
        raise ValueError("model card: metadata does not round-trip through ModelCardData")
    if yaml.safe_load(REGEX_YAML_BLOCK.search(card.content).group(2)) != raw:
        raise ValueError("model card: metadata changes when the card is re-rendered")
    if raw.get("license") is not None and raw["license"] not in HUB_LICENSES:
        raise ValueError(f"model card: unknown license '{raw['license']}'")
    return raw


def split_card(content: str) -> tuple[str, str]:
    """(YAML metadata, Markdown body) of a card, for showing them apart."""
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    match = REGEX_YAML_BLOCK.search(content)
    if not match:
        return "", content
    return match.group(2), content[match.end():].lstrip("\n")
