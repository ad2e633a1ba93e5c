#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short script that prints its own figures (~5 min, H100):
#  1. inversion cost at the real models' sizes (scripts/bench_scale.py, efficient attention: random-weight SD 1.5,
#     SDXL-Turbo and FLUX.1-schnell networks; seconds per image, network passes, peak memory);
#  2. the harness on CUDA: every inverter on 2 held-out world images, UNet Euler 4 and flow 4;
#  3. GNRI's variants against DDIM inversion and fixed point on the world UNet on CUDA.
# Environment: PYTHON (default .venv/bin/python, else python3); OUT (default outputs/gpu_check).
# A failing step is reported and the next one runs; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT:-outputs/gpu_check}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
status=0
step() {
  echo "== $*"
  local t=$SECONDS
  "$@" || { echo "FAILED (exit $?): $*"; status=1; }
  echo "== $((SECONDS - t)) s"
}
step "$PY" scripts/bench_scale.py --device cuda --dtype bfloat16 --attention efficient
for part in world_euler4 world_flow; do
  step timeout 240 "$PY" run.py -m experiment=$part device=cuda dataset.max_images=2 progress=false \
    hydra.sweep.dir="$OUT/$part"
done
step "$PY" scripts/aggregate.py "$OUT" --out "$OUT/report" --title "Embedded world on CUDA (2 images)"
step "$PY" scripts/bench_gnri.py --model world_sd --latents encoded --steps 4 --images 16 --device cuda
exit $status
