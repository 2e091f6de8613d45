"""Training compute on a GPU: the engine's step against plain PEFT with full-sequence logits (issue #17).

    python bench/bench_train_gpu.py                      # LLaVA-1.5-7B architecture, random bf16 weights, batch 8
    python bench/bench_train_gpu.py --preset demo --batch-size 2 --text-tokens 8 --steps 2   # a CPU smoke run

Needs only the project's requirements (bitsandbytes for the QLoRA row) and no download: the model is the
bundled preset's config with random weights (built on the device), the batches are random token ids around
the preset's image tokens (LLaVA-1.5: 576 + `--text-tokens` 60 + a 3-token answer, ~640 tokens per sample)
with labels on the answer only, the same batches for every arm. 1:4:1 at a rank-8 budget (the calculator's
LoraConfig, LoRA weights in fp32 as PEFT keeps them). Arms, alternating (baseline, engine, baseline, engine):
- `peft`: plain PEFT forward/backward, `model(**batch).loss` (logits on every position), no autocast;
- `engine`: the toolkit's step, `toolkit.training.compute.training_loss` (LM head on answer positions only)
  under bf16 autocast where the GPU has it.
Then `qlora`: the same model saved once and reloaded in nf4 (toolkit.training.modeling.nf4_config), batch 1,
gradient checkpointing, the engine's step. Figures: tokens/s over the steps after the first, peak
`torch.cuda.max_memory_allocated` per arm (reset between arms). Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def batches(config, *, steps: int, batch: int, text_tokens: int, device, dtype):
    """`steps` random batches: BOS, image tokens, text, a 3-token answer; labels on the answer only."""
    import torch

    vc = config.vision_config
    n_image = (vc.image_size // vc.patch_size) ** 2  # LLaVA's "default" strategy drops CLS
    vocab = config.text_config.vocab_size
    image_token = config.image_token_index
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        text = torch.randint(4, min(vocab, 30000), (batch, text_tokens + 3), generator=g)
        text[text == image_token] = 5
        ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), torch.full((batch, n_image), image_token), text], 1)
        labels = torch.full_like(ids, -100)
        labels[:, -3:] = ids[:, -3:]
        pixels = torch.randn(batch, 3, vc.image_size, vc.image_size, generator=g)
        out.append({"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                    "labels": labels.to(device), "pixel_values": pixels.to(device, dtype)})
    return out


def build(structure, *, device, dtype):
    """The preset's architecture with random weights, built directly on the device."""
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForImageTextToText.from_config(structure.config, dtype=dtype)


def run_arm(model, data, *, loss_fn, autocast_dtype, device) -> dict:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, tokens, losses = [], 0, []
    for i, batch in enumerate(data):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0:  # the first step pays for kernel selection and allocator growth
            times.append(time.perf_counter() - t0)
            tokens += int(batch["attention_mask"].sum())
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"tokens_per_s": round(tokens / sum(times), 1) if times else None,
            "peak_gib": round(peak / 2**30, 2) if peak else None, "loss_first": round(losses[0], 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="llava-1.5-7b")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--text-tokens", type=int, default=60)
    p.add_argument("--steps", type=int, default=4, help="steps per arm (the first is not timed)")
    p.add_argument("--rounds", type=int, default=2, help="baseline/engine pairs, alternating")
    p.add_argument("--no-qlora", action="store_true", help="skip the nf4 row")
    args = p.parse_args()

    import peft
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from toolkit.calculator.allocation import allocate
    from toolkit.calculator.spec import AllocationSpec, Budget, Ratio
    from toolkit.calculator.structure import load_structure
    from toolkit.training.compute import training_loss
    from toolkit.training.modeling import apply_lora, nf4_config, quiet_libraries, resolve_precision

    quiet_libraries()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision("auto", device)  # bf16 on a GPU that has it, fp32 on CPU
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    autocast = dtype if precision != "fp32" else None
    structure = load_structure(args.preset)
    allocation = allocate(structure, AllocationSpec(ratio=Ratio.parse("1:4:1"), budget=Budget("rank", 8)))
    data = batches(structure.config, steps=args.steps, batch=args.batch_size, text_tokens=args.text_tokens,
                   device=device, dtype=dtype)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "preset": args.preset,
           "precision": precision, "batch_size": args.batch_size, "tokens_per_sample": data[0]["input_ids"].shape[1],
           "trainable": allocation.total, "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                                       "peft": peft.__version__}}

    base = build(structure, device=device, dtype=dtype)
    model = get_peft_model(base, LoraConfig(**{**allocation.lora_config_dict(), "lora_dropout": 0.05}))
    model.train()
    rows = {"peft": [], "engine": []}
    full = lambda m, b: m(**b).loss  # noqa: E731 - the baseline's loss: logits on every position
    for _ in range(args.rounds):
        rows["peft"].append(run_arm(model, data, loss_fn=full, autocast_dtype=None, device=device))
        rows["engine"].append(run_arm(model, data, loss_fn=training_loss, autocast_dtype=autocast, device=device))
    for arm, rs in rows.items():
        out[arm] = {"tokens_per_s": max(r["tokens_per_s"] or 0 for r in rs), "peak_gib": rs[-1]["peak_gib"],
                    "loss_first": rs[0]["loss_first"]}
    out["ratio_tokens_per_s"] = round(out["engine"]["tokens_per_s"] / out["peft"]["tokens_per_s"], 3)
    if out["peft"]["peak_gib"]:
        out["ratio_peak_memory"] = round(out["engine"]["peak_gib"] / out["peft"]["peak_gib"], 3)

    if not args.no_qlora:
        with tempfile.TemporaryDirectory() as tmp:
            plain = model.unload()  # the base model without the LoRA layers
            plain.save_pretrained(tmp, safe_serialization=True)
            del model, base, plain
            if device.type == "cuda":
                torch.cuda.empty_cache()
            from transformers import AutoModelForImageTextToText

            kwargs = {"quantization_config": nf4_config(structure, precision), "dtype": dtype,
                      "device_map": {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}}
            q = AutoModelForImageTextToText.from_pretrained(tmp, **kwargs)
        q = apply_lora(q, allocation, lora_dropout=0.05, quantized=True, gradient_checkpointing=True).train()
        one = [{k: v[:1] for k, v in b.items()} for b in data]
        out["qlora_batch1_gc"] = run_arm(q, one, loss_fn=training_loss, autocast_dtype=autocast, device=device)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
