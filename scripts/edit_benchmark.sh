#!/usr/bin/env bash
# Editing benchmark on the embedded world in the paper's few-step regime: 100 edit pairs balanced over the
# five edit types (dataset.per_type=20), on the world UNet at Euler 4 trailing steps
# (conf/experiment/world_edit_fewstep.yaml: every inverter with prompt swap and Prompt-to-Prompt;
# Plug-and-Play and Direct Inversion + P2P on the DDIM inversion their papers use, and on GNRI's;
# SDEdit and TurboEdit once, as they use no inversion) and on
# its flow model at 4 steps (world_flow_edit_fewstep.yaml: every flow inverter with prompt swap, and
# RF-Solver / FireFlow with value injection); then one table, the paired verdicts of every method against
# ddim+prompt_swap and the editing figures under $OUT/report (817 s measured on the 2-core CPU, alone).
# Jobs run JOBS at a time (default 2, hydra's joblib launcher), each torch process single-threaded
# (two multi-threaded ones on two cores slow each other 10x and more). Each source is inverted once per
# inverter (the sweep's cache) and edited by every editor. FULL=1 runs every part on all 200 pairs
# (dataset.per_type=null) and adds the DDIM-50 part (experiment=world_edit, guidance 3, prompt swap and
# P2P for every inverter). Extra arguments go to every run.py sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
START=$SECONDS
OUT=${OUT:-outputs/edit_benchmark/$(date +%Y-%m-%d_%H-%M-%S)}
PARALLEL=(hydra/launcher=joblib "hydra.launcher.n_jobs=${JOBS:-2}" progress=false "cache_dir=$OUT/.cache")
PAIRS="100 pairs"
if [ "${FULL:-0}" = "1" ]; then PARALLEL+=(dataset.per_type=null); PAIRS="200 pairs"; fi
run() { .venv/bin/python run.py -m "${PARALLEL[@]}" "$@"; }
# Prompt swap for every inverter first, then P2P: one sweep per editor, so that the P2P jobs read every
# inversion from the cache (a sweep over both runs an inverter's two jobs at once, each inverting).
run experiment=world_edit_fewstep task.editor=prompt_swap hydra.sweep.dir="$OUT/unet" "${@:1}"
run experiment=world_edit_fewstep task.editor=p2p hydra.sweep.dir="$OUT/unet_p2p" "${@:1}"
run experiment=world_edit_fewstep inverter=ddim,gnri task.editor=pnp,direct_inversion_p2p \
  hydra.sweep.dir="$OUT/unet_attn" "${@:1}"
run experiment=world_edit_fewstep inverter=ddim task.editor=sdedit,turboedit hydra.sweep.dir="$OUT/unet_free" "${@:1}"
run experiment=world_flow_edit_fewstep hydra.sweep.dir="$OUT/flow" "${@:1}"
run experiment=world_flow_edit_fewstep inverter=rf_solver,fireflow task.editor=v_inject \
  hydra.sweep.dir="$OUT/flow_inject" "${@:1}"
if [ "${FULL:-0}" = "1" ]; then
  run experiment=world_edit dataset.max_pairs=null task.editor=prompt_swap hydra.sweep.dir="$OUT/ddim50" "${@:1}"
  run experiment=world_edit dataset.max_pairs=null task.editor=p2p hydra.sweep.dir="$OUT/ddim50_p2p" "${@:1}"
fi
.venv/bin/python scripts/aggregate.py "$OUT" --out "$OUT/report" --reference ddim+prompt_swap \
  --title "Embedded world: editing ($PAIRS, few-step)"
echo "edit benchmark: $((SECONDS - START)) s after set-up; tables and figures in $OUT/report"
