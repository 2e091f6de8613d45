"""Training throughput: the toolkit's engine against a plain PEFT + transformers Trainer baseline.

    .venv/bin/python bench/bench_train.py [--steps 60] [--batch-size 16]

Both train the same demo model with the same LoraConfig (1:4:1 at a rank-8 budget), the same batches
(`VQAFormatter.train_batch`), fp32 on this machine's device, for the same number of steps; printed figures are
samples/s and tokens/s (non-padding tokens) over the steps after the first 5, and peak memory. Figures go to
bench/RESULTS.md by hand. (The GPU comparison on LLaVA-1.5-7B asked for in issue #3 needs a lent GPU.)
"""

import argparse
import platform
import resource
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()

    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from toolkit.calculator.structure import load_structure
    from toolkit.cli import make_parser
    from toolkit.cli.train import settings_from_args
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa
    from toolkit.training.engine import train
    from toolkit.training.modeling import load_model

    transformers.logging.set_verbosity_error()
    data_spec = "synthetic:shapes?n=4000"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    records = load_vqa(data_spec, split="train")
    structure = load_structure("demo")

    # --- the toolkit's engine
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train", "--model", "demo", "--dataset", data_spec, "--ratio", "1:4:1", "--budget-rank", "8",
                "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--precision", "fp32",
                "--no-progress", "--checkpoint-every", "1000000", "--output", f"{tmp}/a"]
        keep = {}
        t0 = time.perf_counter()
        doc = train(settings_from_args(make_parser().parse_args(argv)), log=lambda m: None, keep=keep)
        engine_wall = time.perf_counter() - t0
        import json

        lines = [json.loads(x) for x in Path(f"{tmp}/a/metrics.jsonl").read_text().splitlines()]
    allocation = keep["allocation"]
    fmt = VQAFormatter(keep["processor"], "llava")
    step_times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(lines, lines[1:])][4:]
    engine_sps = args.batch_size * len(step_times) / sum(step_times)

    # --- baseline: plain PEFT + Trainer, same model, config, batches and steps
    model, _ = load_model(structure, precision="fp32", quantize=None, device=device)
    model = get_peft_model(model, LoraConfig(**{**allocation.lora_config_dict(), "lora_dropout": 0.05}))

    class Records(torch.utils.data.Dataset):
        def __len__(self):
            return len(records)

        def __getitem__(self, i):
            return records[i]

    times = []

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                                  learning_rate=2e-4, warmup_steps=2, lr_scheduler_type="cosine", logging_steps=10,
                                  save_strategy="no", report_to=[], remove_unused_columns=False,
                                  dataloader_num_workers=0, seed=0, use_cpu=device.type == "cpu", disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=Records(), data_collator=fmt.train_batch,
                          callbacks=[Clock()])
        t0 = time.perf_counter()
        trainer.train()
        trainer_wall = time.perf_counter() - t0
    trainer_sps = args.batch_size * len(times[5:]) / sum(times[5:])
    # tokens per sample (non-padding), the same for both: measured on 256 samples of the data
    sample = fmt.train_batch([records[i] for i in range(256)])
    tokens = float(sample["attention_mask"].sum()) / 256
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, device {device.type}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"demo model, 1:4:1 at rank-8 budget = {allocation.total:,} trainable params, batch {args.batch_size}, "
          f"{args.steps} steps, fp32, ~{tokens:.1f} tokens/sample")
    print(f"toolkit engine : {engine_sps:7.1f} samples/s  {engine_sps * tokens:8.0f} tokens/s  (wall {engine_wall:.1f} s "
          f"incl. model load, final loss {doc['result']['final_loss']:.3f})")
    print(f"PEFT + Trainer : {trainer_sps:7.1f} samples/s  {trainer_sps * tokens:8.0f} tokens/s  (wall {trainer_wall:.1f} s)")
    print(f"ratio engine / Trainer: {engine_sps / trainer_sps:.2f}; process peak RSS {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
