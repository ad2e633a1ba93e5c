#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short script that prints its own figures (under 5 minutes on
# one H100/H200 by default):
#  1. inversion cost at the real models' sizes (scripts/bench_scale.py: random-weight SDXL-Turbo UNet and
#     FLUX.1-schnell transformer, bf16, efficient attention, 512x512, 4 steps): one markdown table per model
#     size x method with seconds per image, the bare network's seconds for the same passes, the overhead
#     ratio, peak GiB and peak beyond plain generation, compile off, and for SDXL-Turbo compile on
#     (torch.compile; compile seconds printed apart), then issue 16's target line (gnri_official <= 0.25 s,
#     overhead <= 1.05);
#  2. with FULL=1 only (about 3 more minutes): SD 1.5 at DDIM 50, every inverter through the harness on
#     CUDA (run.py on the embedded world, 2 images, UNet Euler 4 and flow 4) and its report, and GNRI's
#     variants on the world UNet (scripts/bench_gnri.py).
# Environment: PYTHON (default .venv/bin/python, else python3); OUT (default outputs/gpu_check);
# COMPILE_MODE (default: default; reduce-overhead = CUDA graphs); FULL=1.
# Without CUDA it stops at once with one line (exit 2). A failing step is reported and the next one runs;
# the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${OUT:-outputs/gpu_check}
COMPILE_MODE=${COMPILE_MODE:-default}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
"$PY" - <<'PYEOF' || exit 2
import sys
try:
    import torch
except Exception as err:  # noqa: BLE001
    sys.exit(f"gpu_check: cannot import torch ({type(err).__name__}: {err}); nothing was run")
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was run")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
PYEOF
status=0
step() {
  echo "== $*"
  local t=$SECONDS
  "$@" || { echo "FAILED (exit $?): $*"; status=1; }
  echo "== $((SECONDS - t)) s"
}
# FLUX.1-schnell first (compile off: a 12 B transformer compiles for minutes), then SDXL-Turbo off and on.
step timeout 270 "$PY" scripts/bench_scale.py --device cuda --dtype bfloat16 --attention efficient \
  --families flux_schnell sdxl_turbo --compile sdxl_turbo --compile-mode "$COMPILE_MODE"
if [ "${FULL:-0}" = 1 ]; then
  step timeout 240 "$PY" scripts/bench_scale.py --device cuda --dtype bfloat16 --attention efficient --families sd15 \
    --repeats 1
  for part in world_euler4 world_flow; do
    step timeout 240 "$PY" run.py -m experiment=$part device=cuda dataset.max_images=2 progress=false \
      hydra.sweep.dir="$OUT/$part"
  done
  step "$PY" scripts/aggregate.py "$OUT" --out "$OUT/report" --title "Embedded world on CUDA (2 images)"
  step "$PY" scripts/bench_gnri.py --model world_sd --latents encoded --steps 4 --images 16 --device cuda
fi
exit $status
