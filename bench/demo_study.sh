#!/usr/bin/env bash
# The demo study of bench/RESULTS.md: 4 ratios x SEEDS seeds on the offline demo model, through the job system,
# then `compare --json`. The model's training defaults (lr 2e-3, 300 steps, batch 16: `model_defaults`) and the whole validation split
# (2,000 questions, ~10 s per evaluation: at 400 questions each run's score carried ~2.5 points of sampling noise).
# Run from the project root:
#
#     bash bench/demo_study.sh            # 5 seeds (about 15-20 min on 2 CPU cores)
#     SEEDS=2 bash bench/demo_study.sh    # a quick look
#
# Everything goes to a throwaway folder (printed at the end); the adapter store and job store are untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-5}
OUT=${OUT:-$(mktemp -d /tmp/cmba-demo-study.XXXX)}
export CMBA_JOBS_DIR="$OUT/jobs" CMBA_ADAPTERS_DIR="$OUT/adapters"
mkdir -p "$CMBA_JOBS_DIR" "$CMBA_ADAPTERS_DIR"

start=$(date +%s)
$PY -m toolkit sweep --model demo --dataset synthetic:shapes --ratios 1:1:1,1:4:1,4:1:1,1:1:4 --seeds "$SEEDS" \
    --budget-rank 8 --eval-limit 2000 --no-worker --json > "$OUT/plan.json"   # the demo's default lr, steps, batch
$PY -m toolkit worker --slots 2 --threads 1 --once
echo "study: $(( $(date +%s) - start )) s for $SEEDS seeds" >&2
$PY -m toolkit jobs list >&2
$PY -m toolkit compare --baseline 1:1:1 --json > "$OUT/compare.json"
$PY -m toolkit compare --baseline 1:1:1
echo "folder: $OUT" >&2
