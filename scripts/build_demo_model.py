"""Rebuild the offline demo model (preset `demo`) that ships in toolkit/demo_model/.

    .venv/bin/python scripts/build_demo_model.py                 # the shipped settings (CPU, ~15 min)
    .venv/bin/python scripts/build_demo_model.py --steps 50 --output /tmp/demo   # a quick try
    .venv/bin/python scripts/build_demo_model.py --plant projector               # the preset `demo-projector`
    .venv/bin/python scripts/build_demo_model.py --broaden-from DIR   # stage 2 only, from stage 1's weights in DIR

A tiny LLaVA is initialised from toolkit/presets/demo.json with a fixed seed and fully trained on the colour,
shape and existence questions of `synthetic:shapes` (stage 1), then briefly on every question family (stage 2,
`broaden`: it learns what a count or a position answer looks like, not yet to get them right); see
toolkit/training/demo.py for what it is and is not. The
tokenizer and processor are built from code, so nothing is downloaded. The same seed and torch version give
the same weights on CPU. `pretraining.json` next to the weights records the settings and the final loss.

`--plant projector` does not train: it takes the shipped demo weights and plants a deficiency in the projector
(the positive control of an allocation study, preset `demo-projector`): the k principal directions of the output
of `multi_modal_projector.linear_1` (its pre-activation, measured on the image tokens of 512 training images)
are removed: W1' = (I - U U^T) W1, U the top-k eigenvectors of that output's covariance (99.9 % of its variance
lies in the top 4). The image information goes before the projector's non-linearity, so the base falls to
chance level on the image questions; the weight differs from the clean one by exactly a rank-k matrix (U U^T W1),
so a LoRA on linear_1 restores it (its B learns the directions U from the gradient; its random A already sees
the few input directions that vary), while LoRA on the decoder cannot bring back what never reaches it and LoRA
on the vision tower would have to re-encode the image into directions the projector still passes. Only the planted tensor
and the recipe ship (toolkit/training/demo_projector/); the full folder is made on first use (toolkit/training/demo.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from toolkit.data.prompting import VQAFormatter
from toolkit.data.sources import VQARecord
from toolkit.data.synthetic import FAMILIES, SyntheticShapes
from toolkit.training.demo import DEMO_DIR, PRESET_CONFIG, PRETRAIN_TYPES, build_processor
from toolkit.training.loop import lr_factor

SHIPPED = {"steps": 4000, "seed": 0, "batch_size": 32, "lr": 5e-4, "broaden_steps": 100, "broaden_lr": 5e-4}
BROADEN_DATA_SEED = 2000
"""image seed of stage 2's questions (no split of the default dataset, nor stage 1's 1000 + seed, uses it)"""
PLANT = {"projector": {"module": "multi_modal_projector.linear_1", "rank": 8, "images": 512, "data_seed": 7}}
"""what `--plant C` removes: the top-`rank` principal directions of `module`'s output, measured on `images`
training images of synthetic:shapes?seed=`data_seed` (an image seed no split of the default dataset uses)"""


def _train(model, fmt, data, *, steps: int, batch_size: int, lr: float, log) -> None:
    """Full training (every weight) on `data` in order: AdamW, linear warm-up over 5 % of the steps, cosine decay."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, steps, warmup))
    model.train()
    running = None
    for step in range(steps):
        records = []
        for i in range(step * batch_size, (step + 1) * batch_size):
            r = data.record(i)
            records.append(VQARecord(r["question_id"], r["image"], r["question"], r["answers"]))
        batch = fmt.train_batch(records)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps} loss {running:.4f}")


def broaden(model, fmt, *, steps: int, lr: float, batch_size: int = 32, log=print) -> None:
    """Stage 2: a short full training on every question family (`FAMILIES`, image seed `BROADEN_DATA_SEED`), so the
    base knows how counting and position questions are answered but answers them poorly.

    Without it the base had never produced a number or a position, and LoRA fine-tuning had to discover those
    answers from scratch: when it did depended on the seed (counting 1-33 % after 300 steps, positions 0 %), so
    seeds of one ratio spread 3-5 points (issue #26, bench/RESULTS.md)."""
    data = SyntheticShapes(n=steps * batch_size, seed=BROADEN_DATA_SEED, split="train", types=FAMILIES)
    _train(model, fmt, data, steps=steps, batch_size=batch_size, lr=lr, log=log)


def _save(model, processor, output_dir: str | Path) -> Path:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def pretrain(output_dir: str | Path, *, steps: int = 3000, seed: int = 0, batch_size: int = 32, lr: float = 2e-3,
             broaden_steps: int = 0, broaden_lr: float = 5e-4, log=print) -> Path:
    """Pretrain the demo LLaVA from scratch and save it with its processor.

    Stage 1: full training from a fixed seed on `synthetic:shapes` restricted to `PRETRAIN_TYPES`; stage 2
    (`broaden_steps` > 0): `broaden`. Deterministic on CPU for a given torch version.
    """
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    config = LlavaConfig(**json.loads(PRESET_CONFIG.read_text()))
    model = LlavaForConditionalGeneration(config)
    processor = build_processor()
    fmt = VQAFormatter(processor, "llava")
    data = SyntheticShapes(n=steps * batch_size, seed=1000 + seed, split="train", types=PRETRAIN_TYPES)
    _train(model, fmt, data, steps=steps, batch_size=batch_size, lr=lr, log=log)
    if broaden_steps:
        broaden(model, fmt, steps=broaden_steps, lr=broaden_lr, log=log)
    return _save(model, processor, output_dir)


def broaden_from(stage1_dir: str | Path, output_dir: str | Path, *, steps: int, lr: float, log=print) -> Path:
    """Stage 2 only, from a folder holding stage 1's weights (the demo as shipped before stage 2 existed)."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(stage1_dir)
    processor = build_processor()
    broaden(model, VQAFormatter(processor, "llava"), steps=steps, lr=lr, log=log)
    return _save(model, processor, output_dir)


def plant(component: str, *, rank: int | None = None, log=print) -> Path:
    """Write toolkit/training/demo_<component>/{planted.safetensors, recipe.json} from the shipped demo weights."""
    import hashlib

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlavaForConditionalGeneration

    from toolkit.training.demo import VARIANTS, plant_dir

    recipe = dict(PLANT[component], rank=rank or PLANT[component]["rank"])
    name = next(n for n, c in VARIANTS.items() if c == component)
    module = recipe["module"]
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration.from_pretrained(DEMO_DIR).eval()
    fmt = VQAFormatter(build_processor(), "llava")
    data = SyntheticShapes(n=recipe["images"], seed=recipe["data_seed"], split="train")
    layer = model.get_submodule(module.replace("multi_modal_projector", "model.multi_modal_projector"))
    feats = []  # the module's output (pre-activation) on image tokens
    hook = layer.register_forward_hook(lambda m, a, o: feats.append(o.detach().reshape(-1, o.shape[-1])))
    with torch.no_grad():
        for start in range(0, recipe["images"], 64):
            rows = [data.record(i) for i in range(start, min(start + 64, recipe["images"]))]
            model(**fmt.train_batch([VQARecord(r["question_id"], r["image"], r["question"], r["answers"]) for r in rows]))
    hook.remove()
    x = torch.cat(feats).double()
    x = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(x.T @ x / len(x))
    order = evals.argsort(descending=True)
    evals, evecs = evals[order], evecs[:, order]
    u = evecs[:, :recipe["rank"]]
    state = load_file(DEMO_DIR / "model.safetensors")
    clean = state[f"{module}.weight"].double()
    planted = (clean - u @ u.T @ clean).float().contiguous()
    out = plant_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    save_file({f"{module}.weight": planted}, str(out / "planted.safetensors"), metadata={"format": "pt"})
    share = float(evals[:recipe["rank"]].sum() / evals.sum())
    recipe.update(preset=name, component=component, tensor=f"{module}.weight",
                  method="W' = (I - U U^T) W, U: top-k eigenvectors of the covariance of the module's output "
                         "(pre-activation, image tokens); the difference W - W' = U U^T W has rank k",
                  explained_variance=round(share, 4),
                  base_sha256=hashlib.sha256((DEMO_DIR / "model.safetensors").read_bytes()).hexdigest(),
                  torch=torch.__version__)
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    log(f"{name}: removed the top {recipe['rank']} directions of {module}'s output ({share:.1%} of its variance); "
        f"written to {out}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=SHIPPED["steps"])
    p.add_argument("--seed", type=int, default=SHIPPED["seed"])
    p.add_argument("--batch-size", type=int, default=SHIPPED["batch_size"])
    p.add_argument("--lr", type=float, default=SHIPPED["lr"])
    p.add_argument("--broaden-steps", type=int, default=SHIPPED["broaden_steps"],
                   help="stage 2: steps on every question family (0: none)")
    p.add_argument("--broaden-lr", type=float, default=SHIPPED["broaden_lr"])
    p.add_argument("--broaden-from", metavar="DIR",
                   help="run stage 2 only, from a folder with stage 1's weights (e.g. the demo before stage 2 existed)")
    p.add_argument("--output", default=str(DEMO_DIR))
    p.add_argument("--plant", choices=sorted(PLANT), help="plant a deficiency in the shipped demo instead of training")
    p.add_argument("--plant-rank", type=int, default=None, help="directions removed (default: the preset's)")
    args = p.parse_args()
    if args.plant:
        plant(args.plant, rank=args.plant_rank)
        return 0
    t0 = time.time()
    losses = []

    def log(msg):
        print(msg, flush=True)
        if msg.startswith("step"):
            losses.append(float(msg.rsplit(" ", 1)[-1]))

    stage1 = {"steps": args.steps, "seed": args.seed, "batch_size": args.batch_size, "lr": args.lr,
              "question_families": list(PRETRAIN_TYPES)}
    stage2 = {"steps": args.broaden_steps, "batch_size": 32, "lr": args.broaden_lr, "question_families": list(FAMILIES),
              "image_seed": BROADEN_DATA_SEED}
    if args.broaden_from:
        stage1 = json.loads((Path(args.broaden_from) / "pretraining.json").read_text()).get("stage1") or \
            {k: v for k, v in json.loads((Path(args.broaden_from) / "pretraining.json").read_text()).items()
             if k in ("steps", "seed", "batch_size", "lr", "question_families", "final_smoothed_loss")}
        out = broaden_from(args.broaden_from, args.output, steps=args.broaden_steps, lr=args.broaden_lr, log=log)
    else:
        out = pretrain(args.output, steps=args.steps, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                       broaden_steps=args.broaden_steps, broaden_lr=args.broaden_lr, log=log)
    import torch
    import transformers

    record = {"stage1": stage1, "stage2": stage2 if args.broaden_steps else None,
              "final_smoothed_loss": losses[-1] if losses else None,
              "wall_time_s": round(time.time() - t0, 1), "torch": torch.__version__,
              "transformers": transformers.__version__}
    (Path(out) / "pretraining.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"demo model written to {out} in {record['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
