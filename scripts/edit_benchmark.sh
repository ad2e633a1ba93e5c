#!/usr/bin/env bash
# Editing benchmark on the embedded world (conf/experiment/world_edit.yaml): every inverter with
# prompt swap, then null-text and DDIM inversion with Prompt-to-Prompt, on 16 edit pairs, then one
# table and the editing figures under $OUT/report. Extra arguments go to both run.py sweeps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
START=$SECONDS
OUT=${OUT:-outputs/edit_benchmark/$(date +%Y-%m-%d_%H-%M-%S)}
.venv/bin/python run.py -m experiment=world_edit progress=false hydra.sweep.dir="$OUT/prompt_swap" "$@"
.venv/bin/python run.py -m experiment=world_edit inverter=ddim,null_text task.editor=p2p progress=false \
  hydra.sweep.dir="$OUT/p2p" "$@"
.venv/bin/python scripts/aggregate.py "$OUT" --out "$OUT/report" --title "Embedded world: editing (16 pairs)"
echo "edit benchmark: $((SECONDS - START)) s after set-up; tables and figures in $OUT/report"
