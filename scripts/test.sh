#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (CPU only, offline) on TEST_WORKERS pytest-xdist
# workers (default 2, one per core of the 2-core machines), each torch process single-threaded
# (OMP_NUM_THREADS=1: two multi-threaded torch processes on two cores slow each other 10x and more).
# --dist loadfile: each test file runs on one worker, so a module fixture (the paper presets' one smoke
# sweep, an installed plug-in) is built once; --no-loadscope-reorder keeps tests/conftest.py's order: the
# files with the most tests marked slow first, so the workers end on short files. (Not --dist loadgroup:
# pytest-xdist 3.8's xdist_group does not group under pytest 9, whose node ids it can no longer suffix.)
# Extra arguments go to pytest (e.g. tests/test_task_frame.py, -k edit, -n 0 for one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
