"""Evaluation speed: batched greedy generation against one question at a time, on the demo model.

    .venv/bin/python bench/bench_evaluate.py [--questions 256] [--batch-size 32]

Trains a small 1:4:1 demo adapter (a few steps, in a temporary folder), then generates answers to the same
validation questions with batch size 1 and with the batched path that `evaluate` uses, checks that both give
the same answers, and prints questions/s and the speed-up. Figures go to bench/RESULTS.md by hand.
"""

import argparse
import platform
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--questions", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()

    import torch
    from peft import PeftModel

    from toolkit.calculator.structure import load_structure
    from toolkit.cli import make_parser
    from toolkit.cli.train import settings_from_args
    from toolkit.data.prompting import VQAFormatter
    from toolkit.data.sources import load_vqa
    from toolkit.evaluation.evaluate import generate_answers
    from toolkit.training.engine import train
    from toolkit.training.modeling import load_model

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "adapter"
        train(settings_from_args(make_parser().parse_args(
            ["train", "--model", "demo", "--dataset", "synthetic:shapes?n=64", "--ratio", "1:4:1", "--budget-rank", "8",
             "--max-steps", "5", "--batch-size", "8", "--no-progress", "--output", str(out)])), log=lambda m: None)
        device = torch.device("cpu")
        model, processor = load_model(load_structure("demo"), precision="fp32", quantize=None, device=device)
        model = PeftModel.from_pretrained(model, str(out)).eval()
        fmt = VQAFormatter(processor, "llava")
        records = list(load_vqa("synthetic:shapes?n=2000", split="validation", limit=args.questions))
        generate_answers(model, fmt, records[:8], batch_size=8, max_new_tokens=10, device=device)  # warm-up
        timings = {}
        answers = {}
        for bs in (1, args.batch_size):
            t0 = time.perf_counter()
            answers[bs] = generate_answers(model, fmt, records, batch_size=bs, max_new_tokens=10, device=device)
            timings[bs] = time.perf_counter() - t0
    same = answers[1] == answers[args.batch_size]
    print(f"machine: {platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{args.questions} questions, demo model + 1:4:1 adapter (unmerged), greedy, max 10 new tokens")
    for bs, t in timings.items():
        print(f"batch {bs:>3}: {t:7.2f} s  {args.questions / t:8.1f} questions/s")
    print(f"speed-up batched / one at a time: {timings[1] / timings[args.batch_size]:.1f}x; identical answers: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
