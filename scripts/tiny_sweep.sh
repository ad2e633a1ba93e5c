#!/usr/bin/env bash
# Every inverter on the tiny random-weight models (SD at DDIM 10, SDXL at Euler 4 trailing, Flux at
# flow 4, guidance 3 so the CFG-based methods run where they apply), plus the guidance-distilled
# tiny SDXL where they record a skip; one table under $OUT/report. A smoke test of the whole
# harness (minutes on a CPU): random weights, so the numbers are not image quality.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
OUT=${OUT:-outputs/tiny_sweep/$(date +%Y-%m-%d_%H-%M-%S)}
# Every shipped method that reconstructs (gnri/catalog.py; flowedit edits only): one list, never kept by hand.
ALL=$(.venv/bin/python -c "from gnri import catalog; print(','.join(n for n, m in catalog.methods().items()
    if m.origin == 'shipped' and 'reconstruct' in (m.info().tasks or ('reconstruct',))))")
for pair in tiny_sd:ddim10 tiny_sdxl:euler4_trailing tiny_flux:flow4 tiny_sdxl_turbo:euler4_trailing; do
  .venv/bin/python run.py -m model="${pair%%:*}" schedule="${pair##*:}" inverter=$ALL guidance_scale=3.0 \
    progress=false hydra.sweep.dir="$OUT/${pair%%:*}" "$@"
done
.venv/bin/python scripts/aggregate.py "$OUT" --out "$OUT/report" --title "Tiny random-weight models: every inverter (guidance 3)"
