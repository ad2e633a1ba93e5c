#!/usr/bin/env bash
# Set up .venv if needed, then run the default benchmark on the embedded world: every inverter on
# the world's UNet (DDIM 50, Euler 4 trailing) and flow model (4 steps) over 16 held-out images,
# then aggregate the three sweeps into one table and plots under $OUT/report.
# Extra arguments go to every run.py sweep (e.g. dataset.max_images=4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
START=$SECONDS
OUT=${OUT:-outputs/benchmark/$(date +%Y-%m-%d_%H-%M-%S)}
for part in world_ddim50 world_euler4 world_flow; do
  .venv/bin/python run.py -m experiment=$part progress=false hydra.sweep.dir="$OUT/$part" "$@"
done
.venv/bin/python scripts/aggregate.py "$OUT" --out "$OUT/report" --title "Embedded world: reconstruction"
echo "benchmark: $((SECONDS - START)) s after set-up; tables and plots in $OUT/report"
