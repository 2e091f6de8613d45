"""Packed training on a GPU (issue #28): K arms fused on one base vs the same arms one after another or apart.

    python bench/bench_pack_gpu.py                          # the three rows below (bf16 on the GPU)
    python bench/bench_pack_gpu.py --only smolvlm           # one row
    python bench/bench_pack_gpu.py --llava-preset demo --smolvlm-preset DIR --arms 2 --batch-size 2 --steps 2 \\
        --text-tokens 8               # a CPU smoke run of the script (fp32; DIR: a tiny SmolVLM folder with config.json)

No download: each model is a bundled preset's config with random weights built on the device; batches are
random token ids around the family's image tokens (LLaVA-1.5: 576, SmolVLM-500M: 64 after pixel shuffle) plus
`--text-tokens` and a 3-token answer, labels on the answer, a different random batch per arm and step. The arms
differ in allocation (ratios 1:1:1, 1:4:1, 2:4:1, 4:1:1, 1:2:1, 2:1:1, 1:1:2, 1:8:1 at a rank-8 budget, so in
per-module ranks) and seed, LoRA dropout 0.05. The compute is the pack's own (toolkit.training.fused_lora and
`compute.training_losses`, as `train_pack` runs it); each mode runs in its own subprocess, so its peak
`torch.cuda.max_memory_allocated` is its own:
- `pack`: one base, the K arms' batches stacked through every frozen Linear (`--stack-rows` bounds a stack);
- `sequential`: one base, the arms one after another (each arm's batch alone: what K jobs compute, without
  their K model loads);
- `single`: one arm alone on its own base (a separate run; K of them side by side hold K times its peak).
Rows: `smolvlm` (SmolVLM-500M-shaped, 8 arms): samples/s of `pack` over `sequential`, target >= 3x;
`llava` (LLaVA-1.5-7B-shaped, 4 arms): `pack` peak over 4 x `single` peak, target <= 0.55x, at >= 1.0x the
throughput of `sequential`; `qlora`: the llava row with the language model in nf4 (bitsandbytes; vision tower,
projector and lm_head in 16-bit, toolkit.training.modeling.nf4_config), when bitsandbytes runs on the device.
Throughput counts the steps after the first. Prints one JSON line per mode and one summary line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

RATIOS = ("1:1:1", "1:4:1", "2:4:1", "4:1:1", "1:2:1", "2:1:1", "1:1:2", "1:8:1")
ROWS = {"smolvlm": {"preset": "smolvlm-500m", "arms": 8, "batch": 4, "quantize": None},
        "llava": {"preset": "llava-1.5-7b", "arms": 4, "batch": 4, "quantize": None},
        "qlora": {"preset": "llava-1.5-7b", "arms": 4, "batch": 4, "quantize": "4bit"}}


def random_batch(config, *, batch: int, text_tokens: int, seed: int, device, dtype) -> dict:
    """BOS, the family's image tokens, text, a 3-token answer (labels on the answer only), random pixels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vc = config.vision_config
    if config.model_type in ("idefics3", "smolvlm"):
        n_image = (vc.image_size // vc.patch_size) ** 2 // config.scale_factor**2
        image_token, vocab = config.image_token_id, config.text_config.vocab_size
        pixels = {"pixel_values": torch.randn(batch, 1, 3, vc.image_size, vc.image_size, generator=g),
                  "pixel_attention_mask": torch.ones(batch, 1, vc.image_size, vc.image_size, dtype=torch.bool)}
    else:  # LLaVA-1.5: the "default" strategy drops CLS
        n_image = (vc.image_size // vc.patch_size) ** 2
        image_token, vocab = config.image_token_index, config.text_config.vocab_size
        pixels = {"pixel_values": torch.randn(batch, 3, vc.image_size, vc.image_size, generator=g)}
    text = torch.randint(4, min(vocab, 30000), (batch, text_tokens + 3), generator=g)
    text[text == image_token] = 5
    ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), torch.full((batch, n_image), image_token), text], 1)
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, **pixels}
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in out.items()}


class Arm:
    """What the fused layers read of an arm."""

    def __init__(self, adapter: str, device, dropout: float):
        from toolkit.training.fused_lora import RngStream

        self.adapter, self.dropout, self.rng = adapter, dropout, RngStream(device)


def child(mode: str, row: dict, args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForImageTextToText

    from toolkit.calculator.allocation import allocate
    from toolkit.calculator.spec import AllocationSpec, Budget, Ratio
    from toolkit.calculator.structure import load_structure
    from toolkit.training.compute import compact_lora_dropout, training_loss, training_losses
    from toolkit.training.fused_lora import FusedLora, single_layout, stack_batches
    from toolkit.training.modeling import nf4_config, quiet_libraries, resolve_precision

    quiet_libraries()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision("auto", device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    structure = load_structure(row["preset"])
    k = 1 if mode == "single" else row["arms"]
    allocations = [allocate(structure, AllocationSpec(ratio=Ratio.parse(r), budget=Budget("rank", 8)))
                   for r in RATIOS[:k]]
    torch.manual_seed(0)
    if row["quantize"] == "4bit":  # random weights saved once, reloaded in nf4 as `--quantize 4bit` loads them
        with torch.device(device):
            plain = AutoModelForImageTextToText.from_config(structure.config, dtype=dtype)
        with tempfile.TemporaryDirectory() as tmp:
            plain.save_pretrained(tmp, safe_serialization=True)
            del plain
            if device.type == "cuda":
                torch.cuda.empty_cache()
            base = AutoModelForImageTextToText.from_pretrained(
                tmp, quantization_config=nf4_config(structure, precision), dtype=dtype,
                device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"})
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    else:
        with torch.device(device):
            base = AutoModelForImageTextToText.from_config(structure.config, dtype=dtype)
    model, arms = None, []
    for i, allocation in enumerate(allocations):
        torch.manual_seed(i)
        config = LoraConfig(**{**allocation.lora_config_dict(), "lora_dropout": 0.05})
        name = "default" if i == 0 else f"arm{i}"
        if model is None:
            model = get_peft_model(base, config)
        else:
            model.add_adapter(name, config)
        arms.append(Arm(name, device, 0.05))
    optimizers = []
    for arm in arms:
        params = [p for n, p in model.named_parameters() if f".lora_A.{arm.adapter}." in n or f".lora_B.{arm.adapter}." in n]
        for p in params:
            p.requires_grad_(True)
        optimizers.append(torch.optim.AdamW(params, lr=1e-4))
    if precision == "fp32":
        compact_lora_dropout(model)
    fused = FusedLora(model, components={m.name: m.component for m in [*structure.modules, *structure.dead]})

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")

    config = model.get_base_model().config
    model.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, samples = [], 0
    for step in range(args.steps):
        batches = [random_batch(config, batch=row["batch"], text_tokens=args.text_tokens, seed=1000 * step + i,
                                device=device, dtype=dtype) for i in range(k)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        if mode == "pack":
            rows_per = [row["batch"]] * k
            stacks, cur = [], []
            for i in range(k):  # arms in stacks of at most --stack-rows rows
                if cur and args.stack_rows and (len(cur) + 1) * row["batch"] > args.stack_rows:
                    stacks.append(cur)
                    cur = []
                cur.append(i)
            stacks.append(cur)
            for idx in stacks:
                stacked, layout = stack_batches([batches[i] for i in idx], [arms[i] for i in idx], pad_id=0,
                                                config=config)
                with fused.running(layout), autocast():
                    losses = training_losses(model, stacked, [rows_per[i] for i in idx])
                sum(losses).backward()
        else:
            for arm, batch in zip(arms, batches):
                with arm.rng.installed(), fused.running(single_layout(batch, arm)), autocast():
                    loss = training_loss(model, batch)
                loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step > 0:  # the first step pays for kernel selection and allocator growth
            times.append(time.perf_counter() - t0)
            samples += k * row["batch"]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"mode": mode, "preset": row["preset"], "quantize": row["quantize"], "arms": k, "batch_per_arm": row["batch"],
            "tokens_per_sample": int(batches[0]["input_ids"].shape[1]), "precision": precision,
            "samples_per_s": round(samples / sum(times), 3) if times else None,
            "peak_gib": round(peak / 2**30, 2) if peak else None,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=tuple(ROWS), action="append", help="rows to run (default: all)")
    p.add_argument("--steps", type=int, default=4, help="steps per mode (the first is not timed)")
    p.add_argument("--text-tokens", type=int, default=60)
    p.add_argument("--arms", type=int, help="arms per pack (default: the row's)")
    p.add_argument("--batch-size", type=int, help="rows per arm (default: the row's)")
    p.add_argument("--stack-rows", type=int, help="at most this many rows in one fused forward (default: all)")
    p.add_argument("--smolvlm-preset", default="smolvlm-500m", help="preset or model folder of the smolvlm row")
    p.add_argument("--llava-preset", default="llava-1.5-7b", help="preset or model folder of the llava rows")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--row", help=argparse.SUPPRESS)
    args = p.parse_args()
    rows = {name: dict(r) for name, r in ROWS.items()}
    rows["smolvlm"]["preset"] = args.smolvlm_preset
    rows["llava"]["preset"] = rows["qlora"]["preset"] = args.llava_preset
    for r in rows.values():
        r["arms"] = args.arms or r["arms"]
        r["batch"] = args.batch_size or r["batch"]
    if args.child:
        print(json.dumps(child(args.child, rows[args.row], args)), flush=True)
        return 0

    import importlib.util

    import torch

    chosen = args.only or list(rows)
    if "qlora" in chosen and (not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None):
        chosen.remove("qlora")
        print(json.dumps({"row": "qlora", "skipped": "needs a CUDA GPU and bitsandbytes"}), flush=True)
    summary = {}
    common = ["--steps", str(args.steps), "--text-tokens", str(args.text_tokens), "--smolvlm-preset",
              args.smolvlm_preset, "--llava-preset", args.llava_preset] + [f for flag, v in (("--arms", args.arms), ("--batch-size", args.batch_size),
                                                        ("--stack-rows", args.stack_rows)) if v for f in (flag, str(v))]
    for name in chosen:
        results = {}
        for mode in ("pack", "sequential", "single"):
            cmd = [sys.executable, __file__, *common, "--child", mode, "--row", name]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                results[mode] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            else:
                results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps({"row": name, **results[mode]}), flush=True)
        pk, sq, sg = results["pack"], results["sequential"], results["single"]
        row = {}
        if pk.get("samples_per_s") and sq.get("samples_per_s"):
            row["throughput_pack_vs_sequential"] = round(pk["samples_per_s"] / sq["samples_per_s"], 3)
        if pk.get("peak_gib") and sg.get("peak_gib"):
            row["peak_pack_vs_separate_runs"] = round(pk["peak_gib"] / (pk["arms"] * sg["peak_gib"]), 3)
        summary[name] = row
    print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
