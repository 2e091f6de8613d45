"""Cross-modal alignment: generative image-text retrieval, Recall@1/5/10 in both directions.

    python -m toolkit retrieval --adapter adapters/demo-1-4-1-b8-s0 --dataset synthetic:shapes --limit 50 [--json]
    python -m toolkit retrieval --base demo --dataset synthetic:shapes --limit 50          # the reference row
    python -m toolkit retrieval --adapter DIR --dataset my/coco-captions --split val --columns image=img,caption=sentences

For N held-out images, each with its caption, every caption is scored against every image by the model's mean
log-likelihood of the caption's tokens after the image and a captioning prompt (the training prompt's format,
toolkit.data.prompting, with the question "describe the image."), batched over captions. Image->text: is
the image's own caption among the k best-scored captions; text->image: is the caption's own image among the
k images under which it is most likely. Ties count against the right answer. Data: `synthetic:shapes`
(captions written from the scenes, N distinct; toolkit.data.synthetic.caption_pairs) or any `datasets`
image-caption split (Hub id or saved folder; `columns` maps `image` and `caption`; a list of captions takes its
first). Results go to `<run folder>/retrieval/<tag>.json` (toolkit.runs); `summary(rows)` gives each ratio's
mean ± 95 % t-interval over seeds, as for accuracy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit import runs
from toolkit.errors import InputError

KS = (1, 5, 10)
PROMPT = "describe the image."


def recall_at_k(scores, ks=KS) -> dict[str, dict[str, float]]:
    """Recall@k (%) from an (images x captions) score matrix whose diagonal pairs are the right ones.

    >>> recall_at_k(np.eye(3))["image_to_text"]["R@1"]
    100.0
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or not s.size:
        raise InputError(f"scores: need a square images x captions matrix, got shape {s.shape}")
    right = np.diag(s)
    rank_i2t = (s >= right[:, None]).sum(axis=1) - 1  # captions at least as likely as the right one, per image
    rank_t2i = (s >= right[None, :]).sum(axis=0) - 1  # images under which the caption is at least as likely
    return {name: {f"R@{k}": float(100.0 * np.mean(rank < k)) for k in ks}
            for name, rank in (("image_to_text", rank_i2t), ("text_to_image", rank_t2i))}


def ranks(scores) -> dict[str, list[int]]:
    """The right answer's 0-based rank per image (image->text) and per caption (text->image), ties against it:
    what the per-item statistics (seeds x items bootstrap) are computed from."""
    s = np.asarray(scores, dtype=float)
    right = np.diag(s)
    return {"image_to_text": ((s >= right[:, None]).sum(axis=1) - 1).tolist(),
            "text_to_image": ((s >= right[None, :]).sum(axis=0) - 1).tolist()}


@dataclass(frozen=True)
class _Pair:
    """What VQAFormatter.train_batch reads: an image, a prompt question and the caption as the answer."""

    image: object
    answer: str
    question: str = PROMPT


def caption_scores(model, processor, images, captions, *, batch_size: int = 32, device=None,
                   progress=None) -> np.ndarray:
    """(images x captions) mean log-likelihood of each caption's tokens after each image (inference, batched)."""
    import torch

    from toolkit.data.prompting import IGNORE, VQAFormatter

    fmt = VQAFormatter.for_model(processor, model)
    shift = 0 if fmt.is_encoder_decoder else 1  # a decoder-only position t predicts token t+1; a seq2seq one, token t
    device = device or next(model.parameters()).device
    out = np.zeros((len(images), len(captions)))
    model.eval()
    for i, image in enumerate(images):
        for start in range(0, len(captions), batch_size):
            chunk = [_Pair(image, c) for c in captions[start:start + batch_size]]
            batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in fmt.train_batch(chunk).items()}
            labels = batch.pop("labels")
            with torch.inference_mode():
                logits = model(**batch).logits.float()
            logp = torch.log_softmax(logits[:, :logits.shape[1] - shift], dim=-1)  # (b, t - shift, vocab)
            target = labels[:, shift:]
            mask = target != IGNORE
            tok = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
            out[i, start:start + len(chunk)] = (tok.sum(-1) / mask.sum(-1).clamp(min=1)).cpu().numpy()
        if progress:
            progress(i + 1, len(images))
    return out


def load_pairs(dataset: str, *, split: str = "validation", limit: int = 50, columns: dict | None = None,
               seed: int = 0) -> tuple[list[str], list, list[str], dict]:
    """(image ids, images, captions, dataset doc) of `limit` image-caption pairs."""
    if not isinstance(limit, int) or limit < 2:
        raise InputError(f"limit: retrieval needs at least 2 image-caption pairs, got {limit}")
    if dataset.startswith("synthetic:"):
        from toolkit.data.synthetic import caption_pairs

        pairs = caption_pairs(limit, seed=seed, split=split)
        return ([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs],
                {"id": "synthetic:shapes", "split": split, "n": limit, "captions": "written from the scenes"})
    import datasets

    from toolkit.data.hygiene import image_id_of

    cols = {"image": "image", "caption": "caption", **(columns or {})}
    try:
        path = Path(dataset).expanduser()
        ds = datasets.load_from_disk(str(path))[split] if path.is_dir() else datasets.load_dataset(dataset, split=split)
    except (FileNotFoundError, ValueError, KeyError, ConnectionError) as exc:
        raise InputError(f"dataset: cannot load '{dataset}' split '{split}' ({type(exc).__name__}: {exc})") from None
    missing = [c for c in cols.values() if c not in ds.column_names]
    if missing:
        raise InputError(f"columns: '{dataset}' has no column {', '.join(missing)} (columns: {', '.join(ds.column_names)}); "
                         "map them with --columns image=IMG,caption=TEXT")
    ds = ds.select(range(min(limit, len(ds))))
    caps = [c[0] if isinstance(c, list | tuple) else str(c) for c in ds[cols["caption"]]]
    images = [im.convert("RGB") for im in ds[cols["image"]]]
    # the images' ids as a VQA source records them (path, else sha1 of the bytes), so hygiene can compare them
    raw = ds.cast_column(cols["image"], datasets.Image(decode=False)) if isinstance(
        ds.features[cols["image"]], datasets.Image) else ds
    ids = [image_id_of(v) or f"{dataset}/{split}/{i}" for i, v in enumerate(raw[cols["image"]])]
    return ids, images, caps, {"id": dataset, "split": split, "n": len(ds), "columns": cols}


def tag_of(doc: dict) -> str:
    return runs.slug(f"{doc['id']}__{doc['split']}__n{doc['n']}", keep="_-.", limit=80)


def evaluate_retrieval(*, adapter: str | None = None, base: str | None = None, dataset: str = "synthetic:shapes",
                       split: str = "validation", limit: int = 50, columns: dict | None = None, batch_size: int = 32,
                       log=lambda m: None) -> dict:
    """Score an adapter (unmerged PEFT) or a base model; the result is stored in its run folder and returned."""
    from toolkit.calculator.structure import load_structure
    from toolkit.data.hygiene import TrainedOn, check_clean, overlap
    from toolkit.evaluation.evaluate import (
        base_folder,
        check_adapter_files,
        check_writable,
        load_adapter,
        read_adapter,
    )
    from toolkit.training.modeling import default_device, load_model, quiet_libraries, resolve_precision

    if (adapter is None) == (base is None):
        raise InputError("retrieval: give --adapter DIR or --base MODEL")
    ids, images, captions, doc = load_pairs(dataset, split=split, limit=limit, columns=columns)
    if adapter is not None:
        folder = Path(adapter)
        cmba = read_adapter(folder)
        trained = runs.read_trained_on(folder)
        if trained is not None:  # the images, not the captions, are what an adapter can have seen
            check_clean(overlap(TrainedOn.from_json(trained), [(f"caption:{i}", i) for i in ids]),
                        allow_contaminated=False)
        check_adapter_files(folder)
        model_id, revision = cmba.base_model.id, cmba.base_model.revision
        quantize = (cmba.training or runs.TrainingInfo()).quantize
    else:
        folder, model_id, revision, quantize = base_folder(base), base, None, None
    check_writable(folder)
    quiet_libraries()
    structure = load_structure(model_id, revision=revision)
    device = default_device()
    model, processor = load_model(structure, precision=resolve_precision("auto", device), quantize=quantize,
                                  device=device, revision=revision)
    if adapter is not None:
        model = load_adapter(model, folder, model_id)
    t0 = time.perf_counter()
    scores = caption_scores(model, processor, images, captions, batch_size=batch_size,
                            device=device, progress=lambda d, n: log(f"scored {d}/{n} images") if d == n or d % 10 == 0 else None)
    result = {"model": model_id, "adapter": None if adapter is None else folder.name, "dataset": doc,
              "prompt": PROMPT, "score": "mean caption-token log-likelihood after the image",
              "recall": recall_at_k(scores), "ranks": ranks(scores), "time_s": round(time.perf_counter() - t0, 3)}
    if adapter is None and not runs.is_complete(folder):
        folder.mkdir(parents=True, exist_ok=True)
    path = runs.write_retrieval(folder, tag_of(doc), result)
    return {**result, "path": str(path)}


def summary(rows: list[dict]) -> list[dict]:
    """Each ratio's retrieval Recall@k: mean ± 95 % t-interval over its seeds' stored results (compare rows)."""
    from toolkit.evaluation.stats import mean_ci

    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        for tag, doc in runs.read_retrievals(r["path"]).items():
            by.setdefault((r["ratio"] if r["kind"] != "base" else "base model", tag), []).append(doc["recall"])
    out = []
    for (ratio, tag), recs in sorted(by.items()):
        row = {"ratio": ratio, "retrieval set": tag, "seeds": len(recs)}
        for direction in ("image_to_text", "text_to_image"):
            for k in KS:
                mean, _, half = mean_ci([r[direction][f"R@{k}"] for r in recs])
                short = "i2t" if direction == "image_to_text" else "t2i"
                row[f"{short} R@{k}"] = round(mean, 2)
                row[f"{short} R@{k} ±"] = None if half is None or math.isnan(half) else round(half, 2)
        out.append(row)
    return out


def against_baseline(rows: list[dict], *, baseline: str = "1:1:1", k: int = 5) -> list[dict]:
    """Each ratio's Recall@k against `baseline`'s, with the accuracy comparison's statistics: a two-level
    bootstrap over seeds and items (images / captions) of the per-item hits, Holm-adjusted over the ratios.
    Needs the per-item ranks (results written since they are stored) and the same retrieval set."""
    from toolkit.evaluation.stats import holm, two_level_bootstrap

    out = []
    for direction in ("image_to_text", "text_to_image"):
        by: dict[tuple[str, str], list[tuple]] = {}
        for r in rows:
            if r["kind"] == "base":
                continue
            for tag, doc in runs.read_retrievals(r["path"]).items():
                if doc.get("ranks"):
                    by.setdefault((tag, r["ratio"]), []).append((str(r.get("seed")), doc["ranks"][direction]))
        for tag in sorted({t for t, _ in by}):
            base = sorted(by.get((tag, baseline), []))
            tests = []
            for (t, ratio), members in sorted(by.items()):
                if t != tag or ratio == baseline or not base or len({len(m[1]) for m in members + base}) != 1:
                    continue
                members = sorted(members)
                paired = [m[0] for m in members] == [b[0] for b in base]
                hits = lambda ms: 100.0 * (np.array([m[1] for m in ms]) < k)  # noqa: E731 - (seeds, items)
                test = two_level_bootstrap(ratio=hits(members), baseline=hits(base), paired_seeds=paired)
                tests.append((ratio, test, len(members), len(base)))
            for (ratio, test, n_a, n_b), p_adj in zip(tests, holm([t.p_value for _, t, _, _ in tests])):
                out.append({"ratio": ratio, "retrieval set": tag, "seeds": n_a,
                            f"Δ {'i2t' if direction == 'image_to_text' else 't2i'} R@{k} vs {baseline}": round(test.delta, 2),
                            "95% CI": [round(test.ci_low, 2), round(test.ci_high, 2)], "p": round(test.p_value, 4),
                            "Holm p": round(p_adj, 4), "baseline seeds": n_b})
    return out
