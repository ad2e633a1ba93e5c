#!/usr/bin/env bash
# Set up .venv if needed, then run the default benchmark on the embedded world: every inverter on the world's
# UNet at Euler 4 trailing steps and its flow model at 4 steps (16 held-out images each), and the guided part
# (the UNet with classifier-free guidance, 10 DDIM steps, 10 images: null-text and negative-prompt apply there);
# then aggregate the sweeps into one table and plots under $OUT/report, with paired verdicts against ddim and
# the leaderboard (leaderboard.md, leaderboard_<regime>.png), which is also copied into results/leaderboard/.
# FULL=1 adds the DDIM-50 part (about 10 more minutes on a 2-core CPU).
# Extra arguments go to every run.py sweep (e.g. max_images=4); a run with extra arguments is not the default
# benchmark, so it leaves results/leaderboard/ alone unless RESULTS=1 (RESULTS=0: never copy).
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
.venv/bin/python scripts/aggregate.py "$OUT" --out "$OUT/report" --title "Embedded world: reconstruction" \
  --reference ddim
RESULTS=${RESULTS:-$([ $# -eq 0 ] && echo 1 || echo 0)}
if [ "$RESULTS" = "1" ]; then
  rm -rf results/leaderboard && mkdir -p results/leaderboard
  cp "$OUT"/report/leaderboard.md "$OUT"/report/leaderboard.csv "$OUT"/report/leaderboard_*.png results/leaderboard/
  echo "leaderboard: results/leaderboard/leaderboard.md"
fi
echo "benchmark: $((SECONDS - START)) s after set-up; tables and plots in $OUT/report"
