#!/usr/bin/env bash
# Set up .venv if needed, then run the default benchmark (extra arguments go to run.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/python run.py "$@"
