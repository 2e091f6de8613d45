"""Training compute on CPU: the toolkit's engine against a plain PEFT + transformers `Trainer` recipe (issues #17, #28).

    .venv/bin/python bench/bench_train_cpu.py [--rounds 2] [--steps 6] [--batch-size 8] [--lora-dropout 0.05]

A mid-size random-weight LLaVA built from a config (CLIP 256 wide x 6 layers at 224 px = 196 image tokens;
Llama 512 wide x 8 layers, 32,000-token vocabulary; saved once under the system temp folder with the demo
tokenizer and a 224 px image processor), 1:4:1 at a rank-8 budget, fp32, synthetic:shapes questions. The engine
arm runs `toolkit.training.engine.train` (logits on answer positions only, LoRA dropout folded into lora_A). The
baseline is the recipe a user would write: `get_peft_model` with the calculator's LoraConfig, a collator that
calls the processor once per batch with the full sequence as labels (pad -100), `Trainer` with default
arguments (batch size, steps, learning rate, no saving, no reports). Its one deviation from a user's script:
it reads the engine's data order (a sequential sampler over the engine's sample order), so both arms train on
the same batches with the same padding. Both arms use the same `--lora-dropout` (PEFT's own dropout module in the
recipe; the calculator's LoraConfig says 0.0, the engine's default is 0.05).

Until issue #28 the baseline was a Trainer set up unlike a user's: the engine's answer-only collator (the
processor twice per batch), a warm-up step, a log line every step and always LoRA dropout 0.05 through PEFT's
module; bench/RESULTS.md ("Packed training") measures what that changed.
Each arm runs in its own subprocess so its peak RSS (`ru_maxrss`) is its own; the arms alternate (engine,
recipe, engine, recipe, ...) so that load from other processes on the machine hits both alike. Throughput:
samples over wall time between the end of the first step and the end of the last (data preparation included
for both), and samples per CPU second of the process over the same steps (less sensitive to other processes on
a shared machine). One JSON line per arm run, then the per-round ratios and their median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = "synthetic:shapes?n=2000"
SPEC = {"ratio": "1:4:1", "budget_rank": 8}
MID_CONFIG = {
    "vision_config": {"hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4, "num_hidden_layers": 6,
                      "image_size": 224, "patch_size": 16, "projection_dim": 256},
    "text_config": {"hidden_size": 512, "intermediate_size": 1376, "num_attention_heads": 8, "num_key_value_heads": 8,
                    "head_dim": 64, "num_hidden_layers": 8, "vocab_size": 32000, "max_position_embeddings": 1024},
    "vocab_size": 32000,
}


def build_model_dir(folder: Path) -> Path:
    """The mid-size LLaVA: the demo model's config with MID_CONFIG's sizes, random weights, demo tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from toolkit.training.demo import demo_model_dir

    if (folder / "model.safetensors").exists():
        return folder
    demo = demo_model_dir()
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy(demo / f, tmp / f)
    proc = json.loads((demo / "processor_config.json").read_text())
    proc["image_processor"]["crop_size"] = {"height": 224, "width": 224}
    proc["image_processor"]["size"] = {"shortest_edge": 224}
    (tmp / "processor_config.json").write_text(json.dumps(proc, indent=2))
    cfg = json.loads((demo / "config.json").read_text())
    for key in ("vision_config", "text_config"):
        cfg[key].update(MID_CONFIG[key])
    cfg["vocab_size"] = MID_CONFIG["vocab_size"]
    cfg["image_seq_length"] = (224 // 16) ** 2
    config = AutoConfig.for_model(cfg.pop("model_type"), **{k: v for k, v in cfg.items() if k != "architectures"})
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.save_pretrained(tmp, safe_serialization=True)
    os.replace(tmp, folder) if not folder.exists() else shutil.rmtree(tmp)
    return folder


def arm_engine(model_dir: Path, steps: int, batch: int, dropout: float) -> dict:
    from toolkit.training.engine import train
    from toolkit.training.settings import TrainSettings

    with tempfile.TemporaryDirectory() as tmp:
        s = TrainSettings(model=str(model_dir), dataset=DATA, ratio=SPEC["ratio"], budget_rank=SPEC["budget_rank"],
                          max_steps=steps, batch_size=batch, precision="fp32", progress=False, lora_dropout=dropout,
                          checkpoint_every=1000000, output=f"{tmp}/a")
        doc = train(s, log=lambda m: None)
        lines = [json.loads(x) for x in Path(f"{tmp}/a/metrics.jsonl").read_text().splitlines()]
    ends, cpu = [x["time"] for x in lines], [x["cpu_s"] for x in lines]
    return {"samples_per_s": batch * (len(ends) - 1) / (ends[-1] - ends[0]),
            "samples_per_cpu_s": batch * (len(cpu) - 1) / (cpu[-1] - cpu[0]), "final_loss": doc["result"]["final_loss"],
            "trainable": doc["allocation"]["total"]}


def arm_trainer(model_dir: Path, steps: int, batch: int, dropout: float) -> dict:
    """The plain PEFT + Trainer recipe (see the module docstring)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    from toolkit.calculator.allocation import allocate
    from toolkit.calculator.spec import AllocationSpec, Budget, Ratio
    from toolkit.calculator.structure import load_structure
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa
    from toolkit.training.order import DataOrder, token_lengths

    transformers.logging.set_verbosity_error()
    structure = load_structure(str(model_dir))
    allocation = allocate(structure, AllocationSpec(ratio=Ratio.parse(SPEC["ratio"]), budget=Budget("rank", SPEC["budget_rank"])))
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = get_peft_model(model, LoraConfig(**{**allocation.lora_config_dict(), "lora_dropout": dropout}))
    data = load_vqa(DATA, split="train")
    fmt = VQAFormatter(processor, structure.model_type)  # the family's prompt text, as a user copies it
    engine_order = DataOrder(n=len(data), seed=0, per_step=batch, lengths=token_lengths(fmt, data))  # the engine's
    order = [engine_order.index(k) for k in range(steps * batch)]

    def collate(records):  # what a user writes: the processor once, the whole sequence as labels
        enc = processor(text=[fmt.prompt(r.question) + fmt.answer(r.question, r.answer) for r in records],
                        images=[r.image for r in records], padding=True, return_tensors="pt")
        enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return enc

    class InOrder(Trainer):  # the one deviation: the engine's batches, so both arms pad alike
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    ends, cpu = [], []

    class Clock(transformers.TrainerCallback):
        def on_step_end(self, *a, **k):
            ends.append(time.time())
            cpu.append(time.process_time())

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps, learning_rate=2e-4,
                                  save_strategy="no", report_to=[], remove_unused_columns=False, use_cpu=True)
        trainer = InOrder(model=model, args=targs, train_dataset=[data[i] for i in order], data_collator=collate,
                          callbacks=[Clock()])
        out = trainer.train()
    return {"samples_per_s": batch * (len(ends) - 1) / (ends[-1] - ends[0]),
            "samples_per_cpu_s": batch * (len(cpu) - 1) / (cpu[-1] - cpu[0]), "final_loss": out.training_loss,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def run_arm(arm: str, model_dir: Path, steps: int, batch: int, dropout: float) -> dict:
    """One arm in this process; peak RSS is this process's own."""
    import torch

    t0 = time.perf_counter()
    result = (arm_engine if arm == "engine" else arm_trainer)(model_dir, steps, batch, dropout)
    return {"arm": arm, **result, "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "minor_page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
            "threads": torch.get_num_threads()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="engine/recipe pairs, alternating")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per arm (the first is not timed)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout of both arms")
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "cmba-bench-llava-mid"))
    p.add_argument("--arm", choices=("engine", "trainer"), help=argparse.SUPPRESS)  # one arm, in a subprocess
    args = p.parse_args()
    model_dir = Path(args.model_dir)
    if args.arm:
        print(json.dumps(run_arm(args.arm, model_dir, args.steps, args.batch_size, args.lora_dropout)), flush=True)
        return 0

    import peft
    import torch
    import transformers

    build_model_dir(model_dir)
    results = []
    for r in range(args.rounds):
        for arm in ("engine", "trainer"):
            cmd = [sys.executable, __file__, "--arm", arm, "--steps", str(args.steps), "--batch-size",
                   str(args.batch_size), "--lora-dropout", str(args.lora_dropout), "--model-dir", str(model_dir)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                return proc.returncode
            res = {"round": r + 1, **json.loads(proc.stdout.strip().splitlines()[-1])}
            results.append(res)
            print(json.dumps(res), flush=True)
    ratios = []
    for r in range(args.rounds):
        e, t = (next(x for x in results if x["round"] == r + 1 and x["arm"] == a) for a in ("engine", "trainer"))
        ratios.append({"round": r + 1, "samples_per_s": e["samples_per_s"] / t["samples_per_s"],
                       "samples_per_cpu_s": e["samples_per_cpu_s"] / t["samples_per_cpu_s"],
                       "peak_rss": e["peak_rss_mib"] / t["peak_rss_mib"]})
        print(f"round {r + 1}: engine {e['samples_per_s']:.3f} samples/s, {e['peak_rss_mib']:.0f} MiB | recipe "
              f"{t['samples_per_s']:.3f} samples/s, {t['peak_rss_mib']:.0f} MiB | ratio {ratios[-1]['samples_per_s']:.2f}x "
              f"samples/s, {ratios[-1]['samples_per_cpu_s']:.2f}x samples per CPU second, {ratios[-1]['peak_rss']:.2f}x "
              f"peak RSS")
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                      "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                      "batch_size": args.batch_size, "steps": args.steps, "lora_dropout": args.lora_dropout,
                      "median_samples_per_s_ratio": round(statistics.median(x["samples_per_s"] for x in ratios), 3),
                      "median_samples_per_cpu_s_ratio": round(statistics.median(x["samples_per_cpu_s"] for x in ratios), 3),
                      "median_peak_rss_ratio": round(statistics.median(x["peak_rss"] for x in ratios), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
