"""Rebuild the offline demo model (preset `demo`) that ships in toolkit/demo_model/.

    .venv/bin/python scripts/build_demo_model.py                 # the shipped settings (CPU, ~15 min)
    .venv/bin/python scripts/build_demo_model.py --steps 50 --output /tmp/demo   # a quick try

A tiny LLaVA is initialised from toolkit/presets/demo.json with a fixed seed and fully trained on the colour,
shape and existence questions of `synthetic:shapes` (see toolkit/demo.py for what it is and is not). The
tokenizer and processor are built from code, so nothing is downloaded. The same seed and torch version give
the same weights on CPU. `pretraining.json` next to the weights records the settings and the final loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.demo import DEMO_DIR, PRETRAIN_TYPES, pretrain  # noqa: E402

SHIPPED = {"steps": 4000, "seed": 0, "batch_size": 32, "lr": 5e-4}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=SHIPPED["steps"])
    p.add_argument("--seed", type=int, default=SHIPPED["seed"])
    p.add_argument("--batch-size", type=int, default=SHIPPED["batch_size"])
    p.add_argument("--lr", type=float, default=SHIPPED["lr"])
    p.add_argument("--output", default=str(DEMO_DIR))
    args = p.parse_args()
    t0 = time.time()
    losses = []

    def log(msg):
        print(msg, flush=True)
        if msg.startswith("step"):
            losses.append(float(msg.rsplit(" ", 1)[-1]))

    out = pretrain(args.output, steps=args.steps, seed=args.seed, batch_size=args.batch_size, lr=args.lr, log=log)
    import torch
    import transformers

    record = {"steps": args.steps, "seed": args.seed, "batch_size": args.batch_size, "lr": args.lr,
              "question_families": list(PRETRAIN_TYPES), "final_smoothed_loss": losses[-1] if losses else None,
              "wall_time_s": round(time.time() - t0, 1), "torch": torch.__version__,
              "transformers": transformers.__version__}
    (Path(out) / "pretraining.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"demo model written to {out} in {record['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
