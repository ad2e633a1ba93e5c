#!/usr/bin/env bash
# Set up .venv if needed, then run the default benchmark on the embedded world: every inverter on the world's
# UNet at Euler 4 trailing steps and its flow model at 4 steps (16 held-out images each), and the guided part
# (the UNet with classifier-free guidance, 10 DDIM steps, 6 images: null-text and negative-prompt apply there);
# then aggregate the sweeps into one table and plots under $OUT/report.
# FULL=1 adds the DDIM-50 part (about 10 more minutes on a 2-core CPU).
# Extra arguments go to every run.py sweep (e.g. max_images=4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
START=$SECONDS
OUT=${OUT:-outputs/benchmark/$(date +%Y-%m-%d_%H-%M-%S)}
PARTS="world_euler4 world_flow world_guided"
if [ "${FULL:-0}" = "1" ]; then PARTS="world_ddim50 $PARTS"; fi
for part in $PARTS; do
  .venv/bin/python run.py -m experiment=$part progress=false hydra.sweep.dir="$OUT/$part" "$@"
done
.venv/bin/python scripts/aggregate.py "$OUT" --out "$OUT/report" --title "Embedded world: reconstruction"
echo "benchmark: $((SECONDS - START)) s after set-up; tables and plots in $OUT/report"
